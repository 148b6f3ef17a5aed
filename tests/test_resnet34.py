"""ResNet-34 variants (PLC / ABSGD, CMW-Net's padding-0 stem) and ABSGD's SCE CNN: parameter
counts against the PyTorch definitions, shapes, initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdw_jax import models
from gdw_jax.models.resnet34 import ProjectionBlock


def _conv(cin, cout, k, bias=False):
  return cin * cout * k * k + (cout if bias else 0)


def _bn(c):
  return 2 * c  # weight and bias (running statistics are buffers, not parameters)


def torch_resnet34_params(num_classes):
  """``sum(p.numel() for p in ResNet34(num_classes).parameters())``, counted from the
  definition shared by PLC ``preact_resnet34``, ABSGD ``ResNet34`` and CMW-Net ``ResNet34``
  (stem padding does not change it)."""
  n = _conv(3, 64, 3) + _bn(64)
  in_planes = 64
  for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
    for b in range(blocks):
      s = stride if b == 0 else 1
      n += _conv(in_planes, planes, 3) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
      if s != 1 or in_planes != planes:
        n += _conv(in_planes, planes, 1) + _bn(planes)
      in_planes = planes
  return n + 512 * num_classes + num_classes


def torch_sce_cnn_params(num_classes):
  """``SCEModel`` of ABSGD ``noisy_label/model.py`` (convs with bias, fc1 + BN1d, fc2)."""
  n = 0
  for cin, cout in ((3, 64), (64, 64), (64, 128), (128, 128), (128, 196), (196, 196)):
    n += _conv(cin, cout, 3, bias=True) + _bn(cout)
  return n + 3136 * 256 + 256 + _bn(256) + 256 * num_classes + num_classes


def _shapes(name, k, shape=(2, 32, 32, 3)):
  """``(fns, params, model_state)`` as shapes only (``jax.eval_shape``: no compilation, no
  random draws, so a 21M-parameter model costs about a second)."""
  fns = models.get(name, k)
  params, state = jax.eval_shape(fns.init, jax.random.PRNGKey(0), jnp.zeros(shape))
  return fns, params, state


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("k", [10, 100])
def test_parameter_counts_match_the_pytorch_definitions(k):
  assert torch_resnet34_params(10) == 21_282_122  # the known kuangliu ResNet-34 count
  for name in ("resnet34", "resnet34_cmwnet"):
    assert _count(_shapes(name, k)[1]) == torch_resnet34_params(k), name
  assert torch_sce_cnn_params(10) == 1_639_794
  assert _count(_shapes("sce_cnn", k)[1]) == torch_sce_cnn_params(k)


def test_feature_map_shapes_and_the_padding0_stem():
  x = jnp.zeros((2, 32, 32, 3))
  for name, sizes in (("resnet34", (32, 32, 16, 8, 4)), ("resnet34_cmwnet", (30, 30, 15, 8, 4))):
    fns, params, state = _shapes(name, 10)
    _, inter = jax.eval_shape(lambda p, s: fns.module.apply(
        {"params": p, **s}, x, train=False, capture_intermediates=True,
        mutable=["intermediates"]), params, state)
    inter = inter["intermediates"]
    got = tuple(inter[m]["__call__"][0].shape[1]
                for m in ("conv1", "layer1_2", "layer2_3", "layer3_5", "layer4_2"))
    assert got == sizes, name
    assert inter["layer4_2"]["__call__"][0].shape[-1] == 512
    logits, new_state = jax.eval_shape(lambda p, s: fns.apply(p, s, x, True), params, state)
    assert logits.shape == (2, 10)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
  # projection shortcuts exactly where the shape changes (first block of stages 2-4)
  _, params, _ = _shapes("resnet34", 10)
  assert sorted(k for k in params if "shortcut_0" in params[k]) == ["layer2_0", "layer3_0",
                                                                     "layer4_0"]
  assert params["layer2_0"]["shortcut_0"]["kernel"].shape == (1, 1, 64, 128)
  _, cnn, _ = _shapes("sce_cnn", 10)
  assert cnn["fc1"]["kernel"].shape == (3136, 256) and "fc1_bn" in cnn  # 196 x 4 x 4 features


def test_pytorch_default_init():
  """The block the ResNet-34s are made of, initialised for real (one small jitted init)."""
  block = ProjectionBlock(planes=64, stride=2)
  variables = jax.jit(block.init, static_argnums=2)(jax.random.PRNGKey(0),
                                                    jnp.zeros((1, 4, 4, 32)), False)
  params = variables["params"]
  w = np.asarray(params["conv2"]["kernel"])                  # fan_in 64 * 9
  bound = 1 / np.sqrt(64 * 9)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
  assert abs(w.std() - bound / np.sqrt(3)) < 0.03 * bound   # U(-b, b): sd b / sqrt(3)
  assert np.abs(np.asarray(params["shortcut_0"]["kernel"])).max() <= 1 / np.sqrt(32)
  np.testing.assert_array_equal(params["bn1"]["scale"], 1.0)
  np.testing.assert_array_equal(params["shortcut_1"]["bias"], 0.0)
  np.testing.assert_array_equal(variables["batch_stats"]["bn2"]["var"], 1.0)
