"""The same GDW loop as ``examples/linen_gdw.py``, with a Flax NNX model.

    python -m examples.nnx_gdw --epochs 30

``gdw_jax.from_nnx`` splits the module into its parameters (``nnx.Param``) and the rest
(BatchNorm statistics, the dropout stream's key and count), the pure ``apply_fn(params,
model_state, x, train)`` that GDW differentiates; the training loop is unchanged.
"""
import argparse

import jax
import optax
from flax import nnx

import gdw_jax
from examples.linen_gdw import noisy_digits, train


class CNN(nnx.Module):
  """8x8 digits -> conv 3x3 (32) -> BatchNorm -> ReLU -> 2x2 pool -> dropout -> linear."""

  def __init__(self, num_classes=10, dropout=0.2, dtype=jax.numpy.float32, *, rngs: nnx.Rngs):
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.conv = nnx.Conv(1, 32, (3, 3), **kw)
    self.bn = nnx.BatchNorm(32, **kw)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.dense = nnx.Linear(32 * 4 * 4, num_classes, **kw)

  def __call__(self, x):
    x = x.reshape(x.shape[0], 8, 8, 1).astype(self.dtype)
    x = nnx.relu(self.bn(self.conv(x)))
    x = nnx.avg_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
    return self.dense(self.dropout(x))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--epochs", type=int, default=30)
  args = parser.parse_args(argv)
  model = gdw_jax.from_nnx(CNN(rngs=nnx.Rngs(0, dropout=1)))
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=1e-4))
  _, acc = train(model, gdw_jax.gdw(), tx, noisy_digits(), epochs=args.epochs)
  print(f"gdw (nnx): test accuracy {acc:.2f}% after {args.epochs} epochs (40% label noise)")
  return acc


if __name__ == "__main__":
  main()
