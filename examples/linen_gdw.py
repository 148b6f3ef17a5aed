"""GDW in your own training loop: a Flax linen CNN (BatchNorm + dropout) on noisy digits, trained
with your own optax optimizer (AdamW + gradient clipping).

    python -m examples.linen_gdw --epochs 30 [--method erm]

What gdw_jax adds to an ordinary loop is one call, ``gdw_jax.reweighted_grads``, which returns
the gradient of GDW's reweighted loss (after GDW's own meta step on a small clean meta batch).
"""
import argparse
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdw_jax


class CNN(nn.Module):
  """8x8 digits -> conv 3x3 (32) -> BatchNorm -> ReLU -> 2x2 pool -> dropout -> dense."""
  num_classes: int = 10
  dropout: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.reshape(x.shape[0], 8, 8, 1).astype(self.dtype)
    x = nn.Conv(32, (3, 3), dtype=self.dtype, param_dtype=self.dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, param_dtype=self.dtype)(x)
    x = nn.avg_pool(nn.relu(x), (2, 2), (2, 2)).reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype)(x)


def noisy_digits(noise=0.4, meta_per_class=10, seed=0):
  """scikit-learn digits: 500 test images, 10 clean meta images per class, the rest training
  images with ``noise`` of their labels replaced by a uniformly random class."""
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(y))
  test, rest = order[:500], order[500:]
  meta = np.concatenate([rest[y[rest] == c][:meta_per_class] for c in range(10)])
  train = np.setdiff1d(rest, meta)
  y_noisy = np.where(rng.random(len(train)) < noise, rng.integers(0, 10, len(train)), y[train])
  return (x[train], y_noisy), (x[meta], y[meta]), (x[test], y[test])


class State(NamedTuple):
  params: Any
  model_state: Any     # BatchNorm statistics (and the dropout key, see gdw_jax.from_linen)
  opt_state: Any
  method_state: Any    # GDW's weighting net and its optimizer state
  step: Any


def make_step(model, method, tx, lookahead_lr):
  """One jitted training step: reweighted gradients from the method, then the optax update.

  ``lookahead_lr``: the learning rate of the method's one-step look-ahead (plain SGD), a float
  or a schedule. With an SGD optimizer it is the optimizer's own learning rate."""

  @jax.jit
  def step(s: State, batch, meta_batch, rng):
    grads, model_state, method_state, aux = gdw_jax.reweighted_grads(
        method, s.method_state, model.apply, s.params, s.model_state, batch, meta_batch,
        lr=lookahead_lr, step=s.step, rng=rng)
    updates, opt_state = tx.update(grads, s.opt_state, s.params)
    params = optax.apply_updates(s.params, updates)
    return State(params, model_state, opt_state, method_state, s.step + 1), aux

  return step


def init_state(model, method, tx, x, rng) -> State:
  params, model_state = model.init(rng, x[:2])
  method_state = method.init(jax.random.fold_in(rng, 1), params, model_state)
  return State(params, model_state, tx.init(params), method_state, jnp.zeros((), jnp.int32))


def accuracy(model, s: State, x, y) -> float:
  logits, _ = model.apply(s.params, s.model_state, x, False)
  return float(100.0 * np.mean(np.asarray(jnp.argmax(logits, -1)) == y))


def train(model, method, tx, data, *, epochs, lookahead_lr=0.1, batch_size=100, seed=0):
  """Train on ``data`` (:func:`noisy_digits`); returns the final state and test accuracy."""
  (x, y), (xm, ym), (xt, yt) = data
  rng = jax.random.PRNGKey(seed)
  s = init_state(model, method, tx, x, rng)
  step = make_step(model, method, tx, lookahead_lr)
  order = np.random.default_rng(seed)
  for _ in range(epochs):
    perm = order.permutation(len(y))
    for i in range(0, len(y) - batch_size + 1, batch_size):
      idx, midx = perm[i:i + batch_size], order.integers(0, len(ym), batch_size)
      s, _ = step(s, {"x": x[idx], "y": y[idx]}, {"x": xm[midx], "y": ym[midx]},
                  jax.random.fold_in(rng, int(s.step)))
  return s, accuracy(model, s, xt, yt)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--method", default="gdw", choices=("gdw", "erm"))
  args = parser.parse_args(argv)
  model = gdw_jax.from_linen(CNN(), rngs=("dropout",))
  method = gdw_jax.gdw() if args.method == "gdw" else gdw_jax.erm()
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=1e-4))
  _, acc = train(model, method, tx, noisy_digits(), epochs=args.epochs)
  print(f"{args.method}: test accuracy {acc:.2f}% after {args.epochs} epochs (40% label noise)")
  return acc


if __name__ == "__main__":
  main()
