"""Step time of float32 vs. bfloat16 compute, measured side by side (A/B interleaved).

    python -m experiments.bench_precision --model resnet50 --image-size 224 --batch 64 \
        --methods erm,gdw --steps 10 --json runs/bench_precision.json

For each method, the training step (``train_step.make_train_step``, as training builds it) is
compiled twice, once per ``config.compute_dtype`` (float32, bfloat16), on the same synthetic
batch; then the two are timed **alternately**, ``--steps`` times each, every step blocked on its
result, so both see the same machine load (on a shared machine, running the two in separate
processes at different times would compare the load, not the precision). Reports the median
step time of each, their ratio (``speedup`` = float32 / bfloat16) and images/s. For absolute
step times and memory per configuration use ``experiments.bench_step`` (``--compute-dtype``).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

from gdw_jax import cpu_flags, fileio

DTYPES = ("float32", "bfloat16")


def _steps(args, method_name: str):
  """``{dtype: (compiled step, state, batch, meta)}`` for one method."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from configs import common
  from gdw_jax import methods, models, optim, train_step

  k, rng = args.num_classes, np.random.default_rng(0)
  shape = (args.batch, args.image_size, args.image_size, 3)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  y = jnp.asarray(rng.integers(0, k, args.batch))
  meta = {"x": jnp.asarray(rng.normal(size=shape).astype(np.float32)),
          "y": jnp.asarray(rng.integers(0, k, args.batch))}
  info = methods.DataInfo(k, 100 * args.batch, np.full(k, 100 * args.batch // k), 100)
  out = {}
  for dtype in DTYPES:
    c = common.base_config()
    c.method, c.model, c.compute_dtype, c.batch_size = method_name, args.model, dtype, args.batch
    model = models.get(args.model, k, c)
    method = methods.get(method_name)(c, info)
    tx, schedule = optim.classifier_optimizer(c), optim.lr_schedule(c, info.steps_per_epoch)
    state = train_step.create_train_state(jax.random.PRNGKey(0), model, method, tx, x[:2])
    phase = method.phase(0) if method.phase is not None else None
    step = jax.jit(functools.partial(train_step.make_train_step(model, method, tx, schedule),
                                     phase=phase))
    batch = {"x": x, "y": y, "y_true": y}
    m = meta if method.uses_meta else None
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, m).compile()
    print(f"{method_name}/{dtype}: compiled in {time.perf_counter() - t0:.0f}s", file=sys.stderr,
          flush=True)
    out[dtype] = (compiled, state, batch, m)
  return out


def measure(args, method_name: str) -> dict:
  import jax
  runs = _steps(args, method_name)
  times = {d: [] for d in DTYPES}
  for i in range(args.warmup + args.steps):
    for dtype in DTYPES:  # alternate: both precisions see the same load
      compiled, state, batch, meta = runs[dtype]
      t = time.perf_counter()
      jax.block_until_ready(compiled(state, batch, meta))
      if i >= args.warmup:
        times[dtype].append(time.perf_counter() - t)
  ms = {d: 1e3 * statistics.median(v) for d, v in times.items()}
  return {"float32_ms": ms["float32"], "bfloat16_ms": ms["bfloat16"],
          "speedup": ms["float32"] / ms["bfloat16"],
          "float32_images_per_s": args.batch / ms["float32"] * 1e3,
          "bfloat16_images_per_s": args.batch / ms["bfloat16"] * 1e3,
          "steps_timed": args.steps, "backend": jax.default_backend(),
          "device": jax.devices()[0].device_kind}


def main(argv=None) -> int:
  cpu_flags.apply()  # the library's fast XLA:CPU defaults, before JAX starts (if it has not)
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="resnet50")
  p.add_argument("--image-size", type=int, default=224)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--methods", default="erm,gdw")
  p.add_argument("--steps", type=int, default=10, help="timed steps per precision")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--num-classes", type=int, default=10)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  from gdw_jax import methods, models
  chosen = [m for m in args.methods.split(",") if m]
  bad = [m for m in chosen if m not in methods.names()]
  if args.model not in models.names() or not models.supports_compute_dtype(args.model):
    bad.append(args.model)
  if bad or not chosen or args.steps < 1 or args.batch < 1 or args.image_size < 32:
    mixed = [m for m in models.names() if models.supports_compute_dtype(m)]
    print(f"error: bad arguments {bad or ''} (models with mixed precision: {', '.join(mixed)}; "
          f"methods: {', '.join(methods.names())}; --steps, --batch >= 1; --image-size >= 32)",
          file=sys.stderr)
    return 2
  results = {m: measure(args, m) for m in chosen}
  r0 = next(iter(results.values()))
  print(f"\n{args.model}, batch {args.batch}, {args.image_size} px, {r0['backend']} "
        f"({r0['device']}), median of {args.steps} alternating steps\n")
  print("| method | float32 ms | bfloat16 ms | speedup | bfloat16 images/s |\n|---|---|---|---|---|")
  for m, r in results.items():
    print(f"| {m} | {r['float32_ms']:.1f} | {r['bfloat16_ms']:.1f} | {r['speedup']:.2f}× | "
          f"{r['bfloat16_images_per_s']:.1f} |")
  if args.json:
    fileio.write_json(args.json, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
