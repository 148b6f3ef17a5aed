"""ResNet-32 (official option A) and its PyTorch-convention batch norm."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from configs import common
from gdw_jax import models, validation
from gdw_jax.models.resnet_cifar import BasicBlock, CifarResNet, TorchBatchNorm, conv3x3


def _shapes(model, dtype=jnp.float32):
  """Variables of ``model`` as shapes only (``jax.eval_shape``: nothing is compiled)."""
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3), dtype))


@pytest.fixture(scope="module")
def resnet8():
  """CifarResNet with 1 block per stage: the same layers and initialisers as ResNet-32 at a
  fraction of the compile time (ResNet-32 itself runs in float64 in the parity tests)."""
  model = models.functional(CifarResNet(10, blocks=1))
  params, state = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
  return model, params, state


def test_parameter_count_and_shapes():
  params, state = _shapes(models.get("resnet32", 10))
  assert sum(p.size for p in jax.tree.leaves(params)) == 464_154
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 16)
  for stage, width in ((1, 16), (2, 32), (3, 64)):
    for b in range(5):
      block = params[f"layer{stage}_{b}"]
      in_width = width // 2 if stage > 1 and b == 0 else width
      assert block["conv1"]["kernel"].shape == (3, 3, in_width, width)
      assert block["conv2"]["kernel"].shape == (3, 3, width, width)
      assert block["bn2"]["scale"].shape == (width,)
      assert state["batch_stats"][f"layer{stage}_{b}"]["bn1"]["var"].shape == (width,)
  assert "layer1_5" not in params and "layer4_0" not in params
  assert params["linear"]["kernel"].shape == (64, 10)
  # option A shortcuts have no parameters: 31 convs + 31 BNs + 1 linear
  assert len(jax.tree.leaves(params)) == 31 + 2 * 31 + 2
  assert _shapes(models.get("resnet32", 100))[0]["linear"]["bias"].shape == (100,)


def test_pytorch_initialisation(resnet8):
  _, params, state = resnet8
  w = np.asarray(params["layer3_0"]["conv2"]["kernel"])  # fan_in 3 * 3 * 64
  std = np.sqrt(2.0 / (9 * 64))
  assert w.std() == pytest.approx(std, rel=0.03)
  assert np.abs(w).max() > 3 * std  # untruncated normal (Flax's he_normal truncates at 2 std)
  assert np.asarray(params["conv1"]["kernel"]).std() == pytest.approx(np.sqrt(2 / 27), rel=0.2)
  assert np.asarray(params["linear"]["kernel"]).std() == pytest.approx(np.sqrt(2 / 64), rel=0.15)
  bias = np.asarray(params["linear"]["bias"])
  assert np.all(np.abs(bias) <= 0.125) and bias.std() > 0.02  # U(+-1/sqrt(64))
  assert np.all(np.asarray(params["layer2_0"]["bn1"]["scale"]) == 1)
  assert np.all(np.asarray(params["layer2_0"]["bn1"]["bias"]) == 0)
  assert np.all(np.asarray(state["batch_stats"]["bn1"]["mean"]) == 0)
  assert np.all(np.asarray(state["batch_stats"]["bn1"]["var"]) == 1)


def test_forward_train_and_eval(resnet8):
  model, params, state = resnet8
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
  apply = jax.jit(model.apply, static_argnums=3)
  logits, new_state = apply(params, state, x, True)
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state, new_state)
  assert all(jax.tree.leaves(moved))  # every running statistic follows the batch
  eval_logits, same = apply(params, state, x, False)
  assert eval_logits.shape == (4, 10)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), same, state))
  assert not np.allclose(eval_logits, logits)  # eval uses running, not batch, statistics


def test_stride_two_conv_sees_the_pixels_pytorch_sees():
  """Explicit (1, 1) padding: the first output pixel of a stride-2 conv is centred on input
  pixel (0, 0) as in PyTorch (Flax 'SAME' would centre it on (1, 1))."""
  conv = conv3x3(1, 2, jnp.float32, "c")
  x = jnp.zeros((1, 8, 8, 1)).at[0, 0, 0, 0].set(1.0)
  kernel = jnp.zeros((3, 3, 1, 1)).at[1, 1, 0, 0].set(1.0)  # identity tap at the centre
  y = conv.apply({"params": {"kernel": kernel}}, x)
  assert y.shape == (1, 4, 4, 1) and y[0, 0, 0, 0] == 1.0 and jnp.sum(y) == 1.0


def test_option_a_shortcut():
  """With all-zero parameters the residual branch is exactly 0, so a stride-2 block is
  relu(shortcut): every other pixel, channels zero-padded by planes / 4 on each side."""
  block = BasicBlock(planes=8, stride=2)
  x = jnp.abs(jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 4)))
  shapes = jax.eval_shape(lambda: block.init(jax.random.PRNGKey(1), x, train=False))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  y, _ = jax.jit(lambda v: block.apply(v, x, train=True, mutable=["batch_stats"]))(zeros)
  expected = jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
  np.testing.assert_array_equal(y, expected)


def test_float64():
  with jax.enable_x64(True):
    model = models.get("resnet32", 10, None, jnp.float64)
    params, state = _shapes(model)
    assert {p.dtype for p in jax.tree.leaves((params, state))} == {jnp.dtype("float64")}
    logits, new_state = jax.eval_shape(lambda p, s, x: model.apply(p, s, x, True), params,
                                       state, jnp.zeros((2, 32, 32, 3), jnp.float32))
    assert logits.dtype == jnp.float64
    assert {p.dtype for p in jax.tree.leaves(new_state)} == {jnp.dtype("float64")}


@pytest.mark.parametrize("running_var", ["unbiased", "biased"])
def test_batch_norm_matches_torch_batchnorm2d(running_var):
  x = np.random.default_rng(0).normal(2.0, 3.0, size=(5, 4, 3, 2))
  bn = TorchBatchNorm(running_var=running_var)
  variables = bn.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
  variables = {"params": {"scale": jnp.array([1.5, -0.5]), "bias": jnp.array([0.1, 0.2])},
               "batch_stats": {"mean": jnp.array([1.0, -1.0]), "var": jnp.array([2.0, 0.5])}}
  y, new = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
  n = 5 * 4 * 3
  expected = (x - mean) / np.sqrt(var + 1e-5) * np.array([1.5, -0.5]) + np.array([0.1, 0.2])
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  stat_var = var * n / (n - 1) if running_var == "unbiased" else var
  np.testing.assert_allclose(new["batch_stats"]["mean"], 0.9 * np.array([1.0, -1.0]) + 0.1 * mean,
                             rtol=1e-6)
  np.testing.assert_allclose(new["batch_stats"]["var"], 0.9 * np.array([2.0, 0.5]) + 0.1 * stat_var,
                             rtol=1e-6)
  y_eval = bn.apply(variables, jnp.asarray(x), train=False)
  np.testing.assert_allclose(
      y_eval, (x - np.array([1.0, -1.0])) / np.sqrt(np.array([2.0, 0.5]) + 1e-5)
      * np.array([1.5, -0.5]) + np.array([0.1, 0.2]), rtol=1e-5, atol=1e-5)


def test_bn_running_var_config_knob():
  assert common.base_config().bn_running_var == "unbiased"
  biased = models.get("resnet32", 10, ConfigDict({"bn_running_var": "biased"}))
  assert biased.module.bn_running_var == "biased"
  assert models.get("resnet32", 10).module.bn_running_var == "unbiased"
  config = common.base_config()
  config.bn_running_var = "population"
  with pytest.raises(validation.ConfigError, match="unknown bn_running_var 'population'"):
    validation.validate(config)
