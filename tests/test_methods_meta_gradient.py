"""Each meta-learning method's nested-autodiff meta gradient equals central finite differences.

Tiny float64 problem: an MLP with a train-mode BatchNorm layer (so examples are coupled, as in
the CIFAR models), 8 training and 6 meta samples, 3 classes. Every reference objective below is
written from the method's definition (the weighted loss the official PyTorch code builds and
differentiates), not through ``bilevel.py``. The weight-net optimizer is SGD with lr 1, so the
method's gradient is ``phi_old - phi_new``.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from gdw_jax import bilevel, losses, methods, models
from gdw_jax.methods import cmwnet_sl, gdw, l2rw
from gdw_jax.models.mlp import MLP
from gdw_jax.models.weight_nets import CMWNet, VNet

N, M, C, D = 8, 6, 3, 5
LR = 0.7
COUNTS = np.array([60, 12, 3])  # three distinct family scales


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def problem():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(N, D)))
  y = jnp.asarray(np.array([0, 1, 2, 0, 1, 2, 0, 2]))
  xm = jnp.asarray(rng.normal(size=(M, D)))
  ym = jnp.asarray(rng.integers(0, C, M))
  model = models.functional(MLP(C, hidden=(4,), batch_norm=True, dtype=jnp.float64))
  params, ms = model.init(jax.random.PRNGKey(1), x)
  return x, y, xm, ym, model, params, ms


def config_for(method):
  c = digits.get_config()
  c.method = method
  c.dtype = "float64"
  c.prob_clamp = 1.0
  c.vnet.update(hidden=6, optimizer="sgd", lr=1.0, weight_decay=0.0, momentum=0.0)
  c.cmwnet.warmup_epochs = 0
  c.cmwnet_sl.warmup_epochs = 0
  return c


def run_update(method, state, model, params, ms, x, y, xm, ym, step=0, input_info=None):
  @jax.jit
  def f(state, params, x):
    logits, _ = model.apply(params, ms, x, True)
    ctx = bilevel.StepContext(
        apply_fn=model.apply, params=params, model_state=ms, x=x, labels=y, logits=logits,
        lr=jnp.asarray(LR, jnp.float64), meta_x=xm, meta_y=ym, rng=jax.random.PRNGKey(5),
        step=jnp.asarray(step), index=jnp.arange(N), input_info=input_info)
    return method.update(ctx, state)
  return f(state, params, x)


def check_fd(ref_loss, phi, dphi, directions=3, h=1e-5, rtol=1e-6):
  ref = jax.jit(ref_loss)
  leaves, tree = jax.tree.flatten(phi)
  rng = np.random.default_rng(3)
  for _ in range(directions):
    u = jax.tree.unflatten(tree, [jnp.asarray(rng.normal(size=l.shape)) for l in leaves])
    plus = ref(jax.tree.map(lambda p, d: p + h * d, phi, u))
    minus = ref(jax.tree.map(lambda p, d: p - h * d, phi, u))
    fd = (plus - minus) / (2 * h)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(dphi), jax.tree.leaves(u)))
    assert abs(float(fd)) > 1e-8  # the check is not vacuous
    np.testing.assert_allclose(float(analytic), float(fd), rtol=rtol, atol=1e-12)


def meta_ce(model, ms, xm, ym):
  return lambda theta: jnp.mean(losses.cross_entropy(model.apply(theta, ms, xm, True)[0], ym))


def weighted_objective(v, l, normalise, frozen_sum=None):
  """``sum v l / D``; ``sum_detached`` divides by a constant: the sum at the unperturbed net
  (the code's stop-gradient gives the derivative of that function, not of the re-normalised one).
  """
  total = jnp.sum(v * l)
  if normalise == "mean":
    return total / l.shape[0]
  s = frozen_sum if normalise == "sum_detached" else jnp.sum(v)
  return total / jnp.where(s != 0, s, 1.0)


@pytest.mark.parametrize("normalise,live", [("mean", False), ("sum", False),
                                            ("sum_detached", False), ("sum", True)])
def test_mwnet_variants_match_finite_differences(x64, normalise, live):
  x, y, xm, ym, model, params, ms = problem()
  c = config_for("mwnet")
  c.mwnet.normalise, c.mwnet.live_input = normalise, live
  info = methods.DataInfo(C, N, COUNTS, 1)
  method = methods.get("mwnet")(c, info)
  state = method.init(jax.random.PRNGKey(2))
  _, new_state, aux = run_update(method, state, model, params, ms, x, y, xm, ym)
  dphi = jax.tree.map(lambda a, b: a - b, state["params"], new_state["params"])
  vnet = VNet(hidden=6, dtype=jnp.float64)
  l0 = losses.cross_entropy(model.apply(params, ms, x, True)[0], y)
  s0 = jnp.sum(vnet.apply({"params": state["params"]}, l0[:, None]))

  def ref_loss(phi):
    def weighted(theta):
      l = losses.cross_entropy(model.apply(theta, ms, x, True)[0], y)
      inp = l if live else jax.lax.stop_gradient(l)
      v = vnet.apply({"params": phi}, inp[:, None])[:, 0]
      return weighted_objective(v, l, normalise, s0)
    theta = jax.tree.map(lambda p, g: p - LR * g, params, jax.grad(weighted)(params))
    return meta_ce(model, ms, xm, ym)(theta)

  np.testing.assert_allclose(float(aux["meta_loss"]), float(ref_loss(state["params"])),
                             rtol=1e-12)
  check_fd(ref_loss, state["params"], dphi)


def test_cmwnet_matches_finite_differences(x64):
  x, y, xm, ym, model, params, ms = problem()
  c = config_for("cmwnet")
  info = methods.DataInfo(C, N, COUNTS, 1)
  method = methods.get("cmwnet")(c, info)
  state = method.init(jax.random.PRNGKey(2))
  _, new_state, aux = run_update(method, state, model, params, ms, x, y, xm, ym)
  assert float(aux["meta_step"]) == 1.0
  phi = state["net"]["params"]
  dphi = jax.tree.map(lambda a, b: a - b, phi, new_state["net"]["params"])
  net = CMWNet(hidden=6, num_heads=3, dtype=jnp.float64)
  fam = jnp.asarray(np.array([2, 1, 0]))[y]  # counts 60 > 12 > 3: ascending-size families

  def ref_loss(phi):
    def weighted(theta):
      l = losses.cross_entropy(model.apply(theta, ms, x, True)[0], y)
      v = net.apply({"params": phi}, jax.lax.stop_gradient(l)[:, None], fam)[:, 0]
      return jnp.mean(v * l)
    theta = jax.tree.map(lambda p, g: p - LR * g, params, jax.grad(weighted)(params))
    return meta_ce(model, ms, xm, ym)(theta)

  check_fd(ref_loss, phi, dphi)


@pytest.mark.parametrize("second", ["own", "permuted"])
def test_cmwnet_sl_matches_finite_differences(x64, second):
  x, y, xm, ym, model, params, ms = problem()
  c = config_for("cmwnet_sl")
  c.cmwnet_sl.second_weight = second
  c.cmwnet_sl.meta_every = 1
  info = methods.DataInfo(C, N, COUNTS, 1)
  method = methods.get("cmwnet_sl")(c, info)
  state = method.init(jax.random.PRNGKey(2), params, ms)
  x_in, input_info = method.transform_input(state, jax.random.PRNGKey(4), x, y, jnp.asarray(0))
  lam, perm = input_info["lam"], input_info["perm"]
  assert 0.5 <= float(lam) < 1.0
  _, new_state, aux = run_update(method, state, model, params, ms, x_in, y, xm, ym,
                                 input_info=input_info)
  phi = state["net"]["params"]
  dphi = jax.tree.map(lambda a, b: a - b, phi, new_state["net"]["params"])
  net = CMWNet(hidden=6, num_heads=3, dtype=jnp.float64)
  fam_of = jnp.asarray(np.array([2, 1, 0]))
  # Pseudo-labels: the EMA teacher equals the classifier at step 0 (train mode, un-mixed batch).
  p = jax.nn.softmax(model.apply(params, ms, x, True)[0])
  meta_fn = cmwnet_sl.mixup_meta_loss(1.0, 1.0)
  ctx = bilevel.StepContext(apply_fn=model.apply, params=params, model_state=ms, x=x_in,
                            labels=y, logits=None, lr=LR, meta_x=xm, meta_y=ym,
                            rng=jax.random.PRNGKey(5))

  def ref_loss(phi):
    def weighted(theta):
      z = model.apply(theta, ms, x_in, True)[0]
      l_y, l_yp = losses.cross_entropy(z, y), losses.cross_entropy(z, y[perm])
      v = net.apply({"params": phi}, jax.lax.stop_gradient(l_y)[:, None], fam_of[y])[:, 0]
      if second == "own":
        v2 = net.apply({"params": phi}, jax.lax.stop_gradient(l_yp)[:, None],
                       fam_of[y[perm]])[:, 0]
      else:
        v2 = v[perm]
      s_y, s_yp = losses.soft_cross_entropy(z, p), losses.soft_cross_entropy(z, p[perm])
      return jnp.mean(lam * (v * l_y + (1 - v) * s_y) + (1 - lam) * (v2 * l_yp + (1 - v2) * s_yp))
    theta = jax.tree.map(lambda q, g: q - LR * g, params, jax.grad(weighted)(params))
    return meta_fn(ctx, theta)

  np.testing.assert_allclose(float(aux["meta_loss"]), float(ref_loss(phi)), rtol=1e-12)
  check_fd(ref_loss, phi, dphi)


def test_gdw_matches_finite_differences(x64):
  x, y, xm, ym, model, params, ms = problem()
  c = config_for("gdw")
  c.prob_clamp = 0.999
  info = methods.DataInfo(C, N, COUNTS, 1)
  method = methods.get("gdw")(c, info)
  state = method.init(jax.random.PRNGKey(2))
  _, new_state, _ = run_update(method, state, model, params, ms, x, y, xm, ym)
  dphi = jax.tree.map(lambda a, b: a - b, state["params"], new_state["params"])
  vnet = VNet(hidden=6, dtype=jnp.float64)
  logits, vjp = jax.vjp(lambda t: model.apply(t, ms, x, True)[0], params)
  prob = losses.clamped_probs(logits, 0.999)
  e = prob - jax.nn.one_hot(y, C)
  l = losses.cross_entropy(logits, y)

  def ref_loss(phi):
    v = vnet.apply({"params": phi}, l[:, None])
    w = gdw.zero_mean_constraint(jnp.tile(v, (1, C)), prob, y)
    (g,) = vjp(e * w / N)
    return meta_ce(model, ms, xm, ym)(jax.tree.map(lambda p, q: p - LR * q, params, g))

  check_fd(ref_loss, state["params"], dphi)


def test_l2rw_weights_are_the_normalised_negative_meta_gradient(x64):
  x, y, xm, ym, model, params, ms = problem()
  c = config_for("l2rw")
  method = methods.get("l2rw")(c, methods.DataInfo(C, N, COUNTS, 1))
  _, _, aux = run_update(method, method.init(None), model, params, ms, x, y, xm, ym)

  @jax.jit
  def ref_loss(eps):
    def weighted(theta):
      return jnp.sum(eps * losses.cross_entropy(model.apply(theta, ms, x, True)[0], y)) / N
    theta = jax.tree.map(lambda p, g: p - LR * g, params, jax.grad(weighted)(params))
    return meta_ce(model, ms, xm, ym)(theta)

  h = 1e-5
  g = np.array([(ref_loss(h * jnp.eye(N)[i]) - ref_loss(-h * jnp.eye(N)[i])) / (2 * h)
                for i in range(N)])
  expected = np.maximum(-g, 0) / np.maximum(-g, 0).sum()
  assert (expected > 0).any() and (expected == 0).any()  # a mixed case: some samples dropped
  np.testing.assert_allclose(np.asarray(aux["weights"])[:, 0] / N, expected, rtol=1e-6,
                             atol=1e-12)
  assert np.asarray(l2rw.normalised_weights(jnp.asarray(g))).sum() == pytest.approx(1.0)
