"""Inception-ResNet-v2 (WebVision's network): the reference's size, its PyTorch names (so Cadene /
DivideMix checkpoints load with ``init_from``), and a forward of every block type."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdw_jax import interop, models
from gdw_jax.models.inception_resnet_v2 import InceptionResNetV2


def _size(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _shapes(model, size):
  return jax.eval_shape(model.init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))


def test_size_is_the_reference_networks():
  """Keras' InceptionResNetV2 (1000 classes): 55,873,736 variables, of them 55,813,192
  trainable and 60,544 BN statistics; it has no BN scale, so ours (Cadene's layout, with BN
  scales) must have 55,813,192 + 60,544 / 2 parameters and the same 60,544 statistics."""
  params, state = _shapes(models.get("inception_resnet_v2", 1000), 299)
  assert _size(state) == 60_544
  assert _size(params) == 55_813_192 + 60_544 // 2 == 55_843_464


def test_pytorch_names_round_trip_and_load_with_init_from(tmp_path):
  params, state = _shapes(models.get("inception_resnet_v2", 1000), 299)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), (params, state))
  sd = interop.flax_to_torch(*zeros)
  for name, shape in {"conv2d_1a.conv.weight": (32, 3, 3, 3), "conv2d_1a.bn.running_var": (32,),
                      "mixed_5b.branch3.1.conv.weight": (64, 192, 1, 1),
                      "repeat.1.branch0.conv.weight": (32, 320, 1, 1),  # repeat, not repeat_1
                      "repeat.9.branch2.2.bn.bias": (64,), "mixed_6a.branch1.2.conv.weight":
                      (384, 256, 3, 3), "repeat_1.19.branch1.1.conv.weight": (160, 128, 1, 7),
                      "repeat_1.19.conv2d.bias": (1088,),
                      "repeat_2.8.branch1.2.conv.weight": (256, 224, 3, 1),
                      "block8.conv2d.weight": (2080, 448, 1, 1), "conv2d_7b.bn.weight": (1536,),
                      "last_linear.weight": (1000, 1536)}.items():
    assert sd[name].shape == shape, name
  back = interop.torch_to_flax(sd)  # and back to the same Flax tree
  assert jax.tree.structure(back["params"]) == jax.tree.structure(zeros[0])
  assert jax.tree.structure(back["batch_stats"]) == jax.tree.structure(zeros[1]["batch_stats"])
  # A small network (one block of each kind) through init_from: every tensor but the head loads.
  small = models.functional(InceptionResNetV2(7, repeats=(1, 1, 1)))
  init = jax.jit(small.init)
  p, s = init(jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))
  other = init(jax.random.PRNGKey(1), jnp.zeros((1, 75, 75, 3)))
  path = str(tmp_path / "cadene.npz")
  np.savez(path, **interop.flax_to_torch(*other))
  new_p, new_s = interop.init_from(path, p, s, "inception_resnet_v2")
  np.testing.assert_array_equal(new_p["repeat_1_0"]["branch1_1"]["conv"]["kernel"],
                                other[0]["repeat_1_0"]["branch1_1"]["conv"]["kernel"])
  np.testing.assert_array_equal(new_s["batch_stats"]["block8"]["branch0"]["bn"]["var"],
                                other[1]["batch_stats"]["block8"]["branch0"]["bn"]["var"])
  np.testing.assert_array_equal(new_p["last_linear"]["kernel"], p["last_linear"]["kernel"])


def test_forward_of_every_block_kind_at_the_smallest_size():
  model = models.functional(InceptionResNetV2(5, repeats=(1, 1, 1)))
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 75, 75, 3))
  params, state = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  logits, new_state = jax.jit(model.apply, static_argnums=3)(params, state, x, True)
  assert logits.shape == (2, 5) and bool(jnp.all(jnp.isfinite(logits)))
  # train mode moved every running statistic (momentum 0.1 towards the batch's)
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state, new_state)
  assert all(jax.tree.leaves(moved))
  eval_logits, same = jax.jit(model.apply, static_argnums=3)(params, new_state, x, False)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), same, new_state))
  assert not np.allclose(eval_logits, logits)  # running vs batch statistics


def test_images_smaller_than_the_network_takes_are_one_line_before_training(tmp_path):
  from configs import digits
  from gdw_jax import train
  config = digits.get_config("method=erm")
  config.model = "inception_resnet_v2"
  with pytest.raises(train.ConfigError, match=r"model inception_resnet_v2 needs images of at "
                                              r"least 75x75 pixels; the data's are 8x8"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
