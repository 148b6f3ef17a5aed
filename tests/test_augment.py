"""CIFAR augmentation on device: reflect-pad 4 + random crop + flip, per example; normalisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdw_jax.data import augment


def images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def padded(x):
  # PyTorch F.pad(mode='reflect') == NumPy 'reflect' (the edge pixel is not repeated).
  return np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")


def test_crop_flip_equals_the_padded_window_for_every_offset():
  x = images(3)
  ref_pad = padded(x)
  fn = jax.jit(augment.crop_flip)
  for dy in range(9):
    for dx in range(9):
      for flip in (False, True):
        n = x.shape[0]
        out = np.asarray(fn(x, jnp.full(n, dy), jnp.full(n, dx), jnp.full(n, flip)))
        ref = ref_pad[:, dy:dy + 32, dx:dx + 32]
        np.testing.assert_array_equal(out, ref[:, :, ::-1] if flip else ref)


def test_center_crop_without_flip_is_identity_and_flip_is_a_mirror():
  x = images(4)
  n = x.shape[0]
  same = augment.crop_flip(x, jnp.full(n, 4), jnp.full(n, 4), jnp.zeros(n, bool))
  np.testing.assert_array_equal(np.asarray(same), x)
  mirrored = augment.crop_flip(x, jnp.full(n, 4), jnp.full(n, 4), jnp.ones(n, bool))
  np.testing.assert_array_equal(np.asarray(mirrored), x[:, :, ::-1])


def test_random_crop_flip_is_per_example_and_in_bounds():
  n = 128
  x = images(n, seed=1)
  fn = jax.jit(augment.random_crop_flip)
  out = np.asarray(fn(jax.random.PRNGKey(3), x))
  assert out.shape == x.shape and out.dtype == np.uint8
  ref_pad = padded(x)
  offsets, flips = [], []
  for i in range(n):  # each output is one 32x32 window of its padded image, maybe mirrored
    found = next(((dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                  if np.array_equal(out[i], ref_pad[i, dy:dy + 32, dx:dx + 32][:, ::1 - 2 * f])),
                 None)
    assert found, f"example {i} is not a window of its padded image"
    offsets.append(found[:2])
    flips.append(found[2])
  offsets = np.array(offsets)
  assert offsets.min() == 0 and offsets.max() == 8  # the whole range {0..8} is used
  assert len({tuple(o) for o in offsets}) > 40       # offsets differ between examples
  assert 0.35 < np.mean(flips) < 0.65                # p = 0.5 per example
  again = np.asarray(fn(jax.random.PRNGKey(3), x))
  np.testing.assert_array_equal(out, again)          # a pure function of the rng
  other = np.asarray(fn(jax.random.PRNGKey(4), x))
  assert not np.array_equal(out, other)


def test_normalisation_constants():
  np.testing.assert_allclose(augment.CIFAR_MEAN * 255, [125.3, 123.0, 113.9], rtol=1e-6)
  np.testing.assert_allclose(augment.CIFAR_STD * 255, [63.0, 62.1, 66.7], rtol=1e-6)
  x = images(2)
  out = np.asarray(augment.normalize(x))
  ref = (x.astype(np.float32) / 255.0 - augment.CIFAR_MEAN) / augment.CIFAR_STD
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
  # A pixel at the mean maps to 0, one std above it to 1.
  px = np.array([[[[125.3, 123.0, 113.9]]], [[[188.3, 185.1, 180.6]]]], np.float32)
  np.testing.assert_allclose(np.asarray(augment.normalize(px)), [[[[0, 0, 0]]], [[[1, 1, 1]]]],
                             atol=1e-5)


def test_train_transform_and_no_augment():
  x = images(8)
  rng = jax.random.PRNGKey(0)
  out = np.asarray(jax.jit(augment.cifar_train_transform)(rng, x))
  assert out.shape == (8, 32, 32, 3) and out.dtype == np.float32
  crops = jax.jit(augment.random_crop_flip)(rng, x)
  # (jit may turn x / 255 into x * (1 / 255): equal up to float32 rounding)
  np.testing.assert_allclose(out, np.asarray(augment.normalize(crops)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(jax.jit(augment.cifar_no_augment)(rng, x)),
                             np.asarray(augment.normalize(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("i,expected", [(-4, 4), (-1, 1), (0, 0), (31, 31), (32, 30), (35, 27)])
def test_reflect_index(i, expected):
  assert int(augment._reflect(jnp.asarray(i), 32)) == expected
