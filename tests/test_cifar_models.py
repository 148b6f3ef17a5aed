"""WRN-28-10 (MW-Net) and PreAct ResNet-18 (CMW-Net): sizes, layout, init, BN behaviour."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdw_jax import models
from gdw_jax.models.preact_resnet import PreActResNet18
from gdw_jax.models.wrn import WideResNet

X = jnp.zeros((2, 32, 32, 3), jnp.float32)


def n_params(tree):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def shapes(name, num_classes=10, config=None):
  fns = models.get(name, num_classes, config or {})
  return jax.eval_shape(fns.init, jax.random.PRNGKey(0), X)


def wrn_count(depth, k, classes):
  """(trainable parameters, BN channels) of WRN-depth-k counted by hand."""
  n = (depth - 4) // 6
  total, bn, c_in = 3 * 3 * 3 * 16, 0, 16
  for w in (16 * k, 32 * k, 64 * k):
    for _ in range(n):
      bn += c_in + w
      total += 9 * c_in * w + 9 * w * w + (c_in * w if c_in != w else 0)
      c_in = w
  bn += c_in
  return total + 2 * bn + c_in * classes + classes, bn


def test_wrn28_10_size():
  params, state = shapes("wrn28_10")
  count, bn = wrn_count(28, 10, 10)
  assert n_params(params) == count == 36_479_194  # the usual 36.5M
  assert n_params(state["batch_stats"]) == 2 * bn  # running mean and var of every BN
  assert n_params(shapes("wrn28_10", 100)[0]) == wrn_count(28, 10, 100)[0]


def test_preact_resnet18_size():
  params, state = shapes("preact_resnet18")
  convs = 9 * 3 * 64 + sum(9 * a * b for a, b in [(64, 64)] * 4 + [(64, 128), (128, 128),
                                                                       (128, 128), (128, 128)]
                           + [(128, 256)] + [(256, 256)] * 3 + [(256, 512)] + [(512, 512)] * 3)
  shortcuts = 64 * 128 + 128 * 256 + 256 * 512
  bns = 2 * (64 + 2 * (64 + 64) + (64 + 128) + (128 + 128) + (128 + 256) + (256 + 256)
             + (256 + 512) + (512 + 512))
  assert n_params(params) == convs + shortcuts + bns + 512 * 10 + 10 == 11_171_274
  assert n_params(state["batch_stats"]) == bns


def key(seed):
  # The rbg generator initialises 11M-36M parameters several times faster than threefry on CPU.
  return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def preact():
  """PreAct ResNet-18, initialised once (8x8 inputs keep the forwards cheap; same parameters)."""
  fns = models.get("preact_resnet18", 7)
  params, state = jax.jit(fns.init)(key(0), jnp.zeros((2, 8, 8, 3)))
  return fns, params, state


def test_forward_shapes_and_bn_state(preact):
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
  wrn = models.get("wrn", 7, {"wrn_depth": 10, "wrn_widen": 2})
  for fns, (params, state) in ((preact[0], preact[1:]),
                               (wrn, jax.jit(wrn.init)(key(0), x))):

    @jax.jit
    def both(params, state, x, fns=fns):
      return fns.apply(params, state, x, True), fns.apply(params, state, x, False)

    (logits, new_state), (eval_logits, same) = both(params, state, x)
    assert logits.shape == (4, 7) and np.all(np.isfinite(np.asarray(logits)))
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state, new_state)
    assert max(jax.tree.leaves(moved)) > 0  # train mode updates running statistics
    assert eval_logits.shape == (4, 7)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state, same))


def test_wrn_init_is_fan_out_normal_and_head_bias_zero():
  fns = models.get("wrn", 10, {"wrn_depth": 10, "wrn_widen": 4})
  params = jax.jit(fns.init)(key(0), jnp.zeros((2, 8, 8, 3)))[0]
  k = np.asarray(params["WideBlock_2"]["Conv_1"]["kernel"])  # 3x3, 256 -> 256
  assert k.shape == (3, 3, 256, 256)
  assert k.std() == pytest.approx(np.sqrt(2.0 / (9 * 256)), rel=0.02)
  assert np.abs(k).max() > 3 * k.std()  # untruncated normal
  np.testing.assert_array_equal(params["Dense_0"]["bias"], 0.0)
  assert np.abs(params["Dense_0"]["kernel"]).max() <= 1 / np.sqrt(256)


def test_preact_init_is_pytorch_default(preact):
  params = preact[1]
  k = np.asarray(params["PreActBlock_7"]["Conv_1"]["kernel"])  # 3x3, 512 -> 512
  bound = 1 / np.sqrt(9 * 512)
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.99 * bound
  assert np.abs(params["Dense_0"]["bias"]).max() <= 1 / np.sqrt(512)
  np.testing.assert_array_equal(params["BatchNorm_0"]["scale"], 1.0)


def test_preact_identity_shortcut_variants(preact):
  # CMW-Net's identity shortcut carries ReLU(BN(x)); the textbook one carries x.
  _, params, state = preact
  variables = {"params": params, **state}
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3)) - 1.0

  def logits(shortcut_input):
    module = PreActResNet18(7, shortcut_input=shortcut_input)
    return np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))

  assert not np.allclose(logits("activated"), logits("input"))  # same parameter tree
  with pytest.raises(ValueError, match="unknown shortcut_input"):
    PreActResNet18(10, shortcut_input="x").init(key(0), x, train=False)


def test_wrn_depth_must_be_6n_plus_4():
  with pytest.raises(ValueError, match="6n \\+ 4"):
    WideResNet(10, depth=12, widen=1).init(jax.random.PRNGKey(0), X, train=False)
