"""Wall time, compile time and memory of one jitted training step, per method and hypergradient.

    python -m experiments.bench_step --model resnet32 --batch 100 --methods erm,mwnet,gdw \
        --hypergrad jvp,autodiff --json runs/bench_step.json
    python -m experiments.bench_step --model resnet50 --image-size 224 --batch 64 \
        --methods erm,gdw --hypergrad jvp --compute-dtype bfloat16   # mixed precision

Every (method, hypergrad) configuration runs in a fresh subprocess: build the model and method
exactly as training does (``train_step.make_train_step``), synthetic batches of ``--image-size``
RGB images (32: CIFAR; timing does not depend on pixel values), ``--compute-dtype`` as
``config.compute_dtype`` (bfloat16: mixed precision, docs/real_noise.md), compile
(``compile_s``), warm up, then time ``--steps`` (>= 10) steps, each blocked on its result;
``step_ms`` is the median. Memory: ``peak_mem_mb`` is the device's peak bytes in use where the
backend reports it (GPU); otherwise the subprocess's peak
RSS while the timed steps run (the Linux peak-RSS watermark is reset after compilation, so the
XLA compiler's own peak is excluded; ``peak_rss_with_compile_mb`` keeps it). ``xla_temp_mb`` is
XLA's count of the compiled step's temporary buffers (``memory_analysis``): the working memory
the meta step adds on top of parameters and inputs. ERM has no hypergradient; its entry is repeated under each
``erm/<hypergrad>`` key. Prints a markdown table; ``--json`` writes
``{"<method>/<hypergrad>": {"step_ms", "ratio_to_erm", "images_per_s", "peak_mem_mb",
"compile_s", ...}}``.

XLA:CPU flags (``gdw_jax/cpu_flags.py``): ``--cpu-flags ours`` (default) runs with the library's
fast CPU defaults, ``xla`` with XLA's own, ``both`` runs every configuration under each (keys of
the XLA-default runs end in `` [xla defaults]``) and prints the ERM step ratio, the measurement
behind docs/benchmarks.md. Each entry records the ``xla_flags`` it ran with.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

from gdw_jax import cpu_flags, fileio



def _reset_peak_rss() -> bool:
  """Return freed heap to the OS (glibc keeps what the XLA compiler freed), then reset this
  process's peak-RSS watermark (Linux ``clear_refs`` 5); False if unsupported."""
  import ctypes
  import gc
  gc.collect()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return _vm_hwm_mb() is not None
  except OSError:
    return False


def _vm_hwm_mb():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return None


def _worker(args) -> dict:
  """One configuration, in this (fresh) process."""
  import resource

  import jax
  import jax.numpy as jnp
  import numpy as np

  from configs import common
  from gdw_jax import methods, models, optim, train_step

  c = common.base_config()
  c.method, c.model, c.hypergrad = args.method, args.model, args.hypergrad
  c.batch_size, c.num_epochs = args.batch, 80
  c.compute_dtype = args.compute_dtype
  k = args.num_classes
  rng = np.random.default_rng(0)
  size = args.image_size
  shape = (args.batch, size, size, 3) if args.model != "mlp" else (args.batch, 8, 8, 1)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  y = jnp.asarray(rng.integers(0, k, args.batch))
  mx = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  my = jnp.asarray(rng.integers(0, k, args.batch))
  # Candidate sets for partial-label methods (PRODEN), binomial q = 0.3; the others ignore them
  # (a method that cannot use them gets None). The trainer always passes the batch's positions.
  from gdw_jax.data import partial
  needs_sets = methods.spec(args.method).candidates != "no"
  cand = (partial.partialize(rng.integers(0, k, 49000), k, 0.3, "binomial", rng)
          if needs_sets else None)
  info = methods.DataInfo(k, 49000, np.full(k, 49000 // k), 490, cand)
  model = models.get(args.model, k, c)
  method = methods.get(args.method)(c, info)
  schedule = optim.lr_schedule(c, info.steps_per_epoch)
  tx = optim.classifier_optimizer(c)
  state = train_step.create_train_state(jax.random.PRNGKey(0), model, method, tx, x[:2])
  phase = method.phase(0) if method.phase is not None else None  # step 0: a meta step
  step = jax.jit(functools.partial(
      train_step.make_train_step(model, method, tx, schedule, hypergrad=args.hypergrad),
      phase=phase), donate_argnums=0)
  batch = {"x": x, "y": y, "y_true": y,
           "index": jnp.asarray(rng.permutation(49000)[:args.batch].astype(np.int32))}
  meta = {"x": mx, "y": my} if method.uses_meta else None
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

  t0 = time.perf_counter()
  compiled = step.lower(state, batch, meta).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  xla_temp_mb = mem.temp_size_in_bytes / 2**20 if mem is not None else None

  for _ in range(args.warmup):
    state, m, _ = compiled(state, batch, meta)
  jax.block_until_ready(state)
  watermark_reset = _reset_peak_rss()  # from here on, VmHWM is the peak of running the step
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    state, m, w = compiled(state, batch, meta)
    jax.block_until_ready((state, m, w))
    times.append(time.perf_counter() - t)
  dev = jax.devices()[0]
  stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
  peak_with_compile = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  if stats and "peak_bytes_in_use" in stats:
    peak, source = stats["peak_bytes_in_use"] / 2**20, "device"
  elif watermark_reset:
    peak, source = _vm_hwm_mb(), "rss"
  else:
    peak, source = peak_with_compile, "rss+compile"
  return {"step_ms": 1e3 * statistics.median(times), "step_ms_min": 1e3 * min(times),
          "images_per_s": args.batch / statistics.median(times),
          "compile_s": compile_s, "peak_mem_mb": peak, "peak_mem_source": source,
          "peak_rss_with_compile_mb": peak_with_compile,
          "rss_before_compile_mb": rss_before, "xla_temp_mb": xla_temp_mb,
          "steps_timed": len(times), "backend": jax.default_backend(),
          "device": dev.device_kind}


def _env(flag_set: str) -> dict:
  """The worker's environment: ours (the library's CPU defaults, where they apply) or XLA's."""
  env = dict(os.environ, XLA_FLAGS=cpu_flags.user_flags())
  for key in (cpu_flags.OPT_OUT, cpu_flags.ADDED):
    env.pop(key, None)
  if flag_set == "ours":
    cpu_flags.apply(env)
  env[cpu_flags.OPT_OUT] = "0"  # the worker runs with exactly these flags
  return env


def _run_config(args, method: str, hypergrad: str, flag_set: str = "ours") -> dict:
  cmd = [sys.executable, "-m", "experiments.bench_step", "--worker", "--model", args.model,
         "--batch", str(args.batch), "--methods", method, "--hypergrad", hypergrad,
         "--steps", str(args.steps), "--warmup", str(args.warmup),
         "--num-classes", str(args.num_classes), "--image-size", str(args.image_size),
         "--compute-dtype", args.compute_dtype]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = _env(flag_set)
  r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
  if r.returncode != 0:
    raise RuntimeError(f"{method}/{hypergrad} failed:\n{r.stderr[-3000:]}")
  return dict(json.loads(r.stdout.strip().splitlines()[-1]), xla_flags=env["XLA_FLAGS"])


def table(results: dict) -> str:
  lines = ["| method/hypergrad | step ms (median) | × ERM | compile s | peak mem MB | "
           "XLA temp MB |", "|---|---|---|---|---|---|"]
  for key, r in results.items():
    temp = f"{r['xla_temp_mb']:.0f}" if r.get("xla_temp_mb") is not None else "–"
    lines.append(f"| {key} | {r['step_ms']:.1f} | {r['ratio_to_erm']:.2f} | "
                 f"{r['compile_s']:.1f} | {r['peak_mem_mb']:.0f} ({r['peak_mem_source']}) | "
                 f"{temp} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="resnet32")
  p.add_argument("--batch", type=int, default=100)
  p.add_argument("--methods", default="erm,mwnet,gdw")
  p.add_argument("--hypergrad", default="jvp,autodiff")
  p.add_argument("--steps", type=int, default=10, help="timed steps (>= 10)")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--num-classes", type=int, default=10)
  p.add_argument("--image-size", type=int, default=32, help="square RGB inputs (not for mlp)")
  p.add_argument("--compute-dtype", default="", choices=["", "float32", "bfloat16"],
                 help="config.compute_dtype; '' = float32 (the parameters' dtype)")
  p.add_argument("--json", default=None)
  p.add_argument("--cpu-flags", default="ours", choices=("ours", "xla", "both"),
                 help="XLA:CPU flags: the library's fast defaults, XLA's own, or both")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)

  if args.worker:
    args.method, args.hypergrad = args.methods, args.hypergrad
    print(json.dumps(_worker(args)))
    return 0
  from gdw_jax import bilevel, methods, models
  chosen = [m for m in args.methods.split(",") if m]
  hgs = [h for h in args.hypergrad.split(",") if h]
  bad = ([m for m in chosen if m not in methods.names()] +
         [h for h in hgs if h not in bilevel.HYPERGRADS] +
         ([args.model] if args.model not in models.names() else []))
  if args.compute_dtype not in ("", "float32") and args.model in models.names():
    bad += [] if models.supports_compute_dtype(args.model) else [
        f"--compute-dtype {args.compute_dtype} with {args.model}"]
  if bad or not chosen or not hgs or args.steps < 10 or args.batch < 1 or args.image_size < 1:
    print(f"error: bad arguments {bad or ''} (methods: {', '.join(methods.names())}; hypergrad: "
          f"{', '.join(bilevel.HYPERGRADS)}; --steps >= 10; --batch >= 1; --compute-dtype "
          f"bfloat16 needs one of "
          f"{', '.join(m for m in models.names() if models.supports_compute_dtype(m))})",
          file=sys.stderr)
    return 2

  results, t0, erms = {}, time.time(), {}
  sets = ("ours", "xla") if args.cpu_flags == "both" else (args.cpu_flags,)
  for flag_set in sets:
    suffix = " [xla defaults]" if flag_set == "xla" and len(sets) > 1 else ""
    erm = erms[flag_set] = _run_config(args, "erm", hgs[0], flag_set)
    for method in chosen:
      for hg in hgs:
        r = erm if method == "erm" else _run_config(args, method, hg, flag_set)
        results[f"{method}/{hg}{suffix}"] = dict(r, ratio_to_erm=r["step_ms"] / erm["step_ms"])
        print(f"{method}/{hg}{suffix}: {r['step_ms']:.1f} ms", file=sys.stderr, flush=True)
  print(f"\n{args.model}, batch {args.batch}, {args.image_size} px, compute "
        f"{args.compute_dtype or 'float32'}, {erm['backend']} ({erm['device']}), "
        f"{time.time() - t0:.0f}s; XLA_FLAGS: {erms[sets[0]]['xla_flags'] or '(none)'}\n")
  print(table(results))
  if len(sets) > 1:
    ours, xla = erms["ours"]["step_ms"], erms["xla"]["step_ms"]
    print(f"\nERM step: {ours:.1f} ms with our CPU flags, {xla:.1f} ms with XLA's defaults "
          f"({xla / ours:.2f}x faster)")
  if args.json:
    fileio.write_json(args.json, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
