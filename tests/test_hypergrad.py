"""``hypergrad=jvp`` (one forward-mode product, memory-lean) equals ``hypergrad=autodiff`` (nested
reverse mode), in float64: every meta-learning method on a tiny BN-coupled MLP, and MW-Net and
GDW on a CIFAR ResNet: ResNet-32's network with one block per stage (ResNet-8: the same convs,
BN, identity and option-A shortcuts; 8x8 inputs). ResNet-32 itself takes the JVP route against
the official code in tests/test_parity.py; here its three cases took 81 s, these 33 s."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from gdw_jax import bilevel, losses, methods, models, optim, train_step
from gdw_jax.models.resnet_cifar import CifarResNet

C = 4
METHODS = ["mwnet", "gdw", "l2rw", "cmwnet"]


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _setup(model_name, method, seed=0):
  c = common.base_config()
  c.method, c.dtype = method, "float64"
  if model_name == "tiny":
    model = models.get("mlp", C, {"mlp_hidden": (7,), "mlp_batch_norm": True}, jnp.float64)
    shape = (6, 5)
  else:
    model = models.functional(CifarResNet(C, blocks=1, dtype=jnp.float64))
    shape = (6, 8, 8, 3)
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  batch = {"x": jax.random.normal(k[0], shape, jnp.float64),
           "y": jax.random.randint(k[1], (shape[0],), 0, C)}
  meta = {"x": jax.random.normal(k[2], shape, jnp.float64),
          "y": jax.random.randint(k[3], (shape[0],), 0, C)}
  # Very unequal class counts, so CMW-Net's k-means gives its three families distinct heads.
  info = methods.DataInfo(C, 600, np.array([500, 60, 30, 10]), 10)
  method_obj = methods.get(method)(c, info)
  tx = optim.classifier_optimizer(c)
  state = train_step.create_train_state(jax.random.PRNGKey(1), model, method_obj, tx, batch["x"])
  return c, model, method_obj, tx, state, batch, meta


def _steps(model, method_obj, tx, state, batch, meta, hypergrad, n=3):
  step = jax.jit(train_step.make_train_step(model, method_obj, tx, lambda s: jnp.asarray(0.3),
                                       hypergrad=hypergrad, return_cotangent=True))
  cots = []
  for _ in range(n):
    state, m, _ = step(state, batch, meta)
    cots.append(m["logit_cotangent"])
  return state, cots


def _assert_trees_close(a, b, rtol=1e-10, atol=1e-15):
  """Per leaf ``max|x - y| <= rtol max|y| + atol``; ``atol`` only matters for leaves that are
  round-off themselves (e.g. a parameter whose update is ~1e-17)."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    err, scale = float(np.abs(x - y).max()), float(np.abs(y).max())
    assert err <= rtol * scale + atol, (err, scale)


# Every method on the tiny BN-coupled MLP; on the ResNet the two of the parity fixtures (L2RW's
# and CMW-Net's weighting sits on the same meta-gradient code, checked on the MLP).
CASES = [(m, "tiny") for m in METHODS] + [("mwnet", "resnet8"), ("gdw", "resnet8")]


@pytest.mark.parametrize("method,model_name", CASES)
def test_three_steps_agree(method, model_name):
  _, model, method_obj, tx, state, batch, meta = _setup(model_name, method)
  ours, cot_j = _steps(model, method_obj, tx, state, batch, meta, "jvp")
  ref, cot_a = _steps(model, method_obj, tx, state, batch, meta, "autodiff")
  # The weighting really moved the update (the comparison is not of two no-ops) ...
  assert float(jnp.abs(cot_a[-1]).max()) > 0
  # ... and both routes land on the same parameters, BN stats and method state.
  _assert_trees_close((ours.params, ours.model_state, ours.method_state),
                      (ref.params, ref.model_state, ref.method_state))
  _assert_trees_close(cot_j, cot_a)


@pytest.mark.parametrize("model_name", ["tiny", "resnet8"])
def test_meta_gradients_agree(model_name):
  _, model, _, _, state, batch, meta = _setup(model_name, "gdw", seed=3)
  logits, vjp = jax.vjp(lambda p: model.apply(p, state.model_state, batch["x"], True)[0],
                        state.params)
  ctx = bilevel.StepContext(apply_fn=model.apply, params=state.params,
                            model_state=state.model_state, x=batch["x"], labels=batch["y"],
                            logits=logits, lr=jnp.asarray(0.3, jnp.float64), meta_x=meta["x"],
                            meta_y=meta["y"])
  e = losses.ce_logit_grad(logits, batch["y"], 0.999)
  for shape in [(6, C), (6, 1)]:
    w = jax.random.uniform(jax.random.PRNGKey(4), shape, jnp.float64, 0.2, 1.5)
    la, ga = bilevel.meta_gradient(ctx, e, w)
    for reuse in (None, vjp):  # with and without the step's own forward VJP
      fast = ctx.__class__(**{**ctx.__dict__, "hypergrad": "jvp", "logits_vjp": reuse})
      lj, gj = bilevel.meta_gradient(fast, e, w)
      np.testing.assert_allclose(lj, la, rtol=1e-12)
      _assert_trees_close(gj, ga)
    assert float(jnp.abs(ga).max()) > 0
