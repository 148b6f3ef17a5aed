"""One command for a machine with an accelerator: the numbers issue 15 and the step benchmarks
ask for, in one JSON.

    python -m experiments.gpu_check --json runs/gpu_check.json

Parts, each in fresh processes (so each has its own peak-memory reading):

* ``versions``: Python, jax, jaxlib, backend, device kind and count;
* ``step``: ERM and GDW (``autodiff`` and ``jvp`` hypergradients), ResNet-32, batch 100:
  median step ms, compile s, peak device memory (``experiments.bench_step``'s worker);
* ``epoch``: one full CIFAR-shaped epoch (49,000 synthetic training images, GDW, ResNet-32,
  compiled epochs; two are run): the first epoch's wall s (with compilation), the second's
  (steps, evaluation, checkpoints), steps/s, the time split, peak memory;
* ``seeds``: K = 1, 2, 4, 8 GDW runs in one program (``--seeds-pool`` images, one epoch each):
  training steps/s per run, runs/hour of the paper's 80-epoch CIFAR-10 run extrapolated from it,
  and how K runs compare with K times one run.

``--model``, ``--pool`` and friends shrink it to a CPU-sized check (the test suite runs it with
a tiny MLP). Prints a summary; ``--json`` writes everything.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from gdw_jax import fileio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_STEPS = 80 * 490  # the GDW paper's CIFAR-10 run: 80 epochs of 490 steps


def versions() -> dict:
  """In a child process: this one never starts JAX (on a GPU it would hold memory the
  measuring processes need)."""
  code = "import json; from experiments import gpu_check as g; print(json.dumps(g._versions()))"
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     check=True)
  return json.loads(r.stdout.strip().splitlines()[-1])


def _versions() -> dict:
  import jax
  import jaxlib
  dev = jax.devices()[0]
  return {"python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
          "device_kind": dev.device_kind, "device_count": jax.device_count(),
          "platform": platform.platform()}


def step_part(args) -> dict:
  from experiments import bench_step
  a = argparse.Namespace(model=args.model, batch=args.batch, steps=args.steps, warmup=2,
                         num_classes=10, image_size=32, compute_dtype="")
  out = {}
  for method, hg in (("erm", "autodiff"), ("gdw", "autodiff"), ("gdw", "jvp")):
    r = bench_step._run_config(a, method, hg)
    out[f"{method}/{hg}"] = {k: r[k] for k in ("step_ms", "step_ms_min", "compile_s",
                                                "peak_mem_mb", "peak_mem_source")}
    print(f"step {method}/{hg}: {r['step_ms']:.1f} ms", file=sys.stderr, flush=True)
  return out


def _launch(args, seeds, together: bool, pool: int, epochs: int, workdir: str) -> dict:
  from experiments import bench_runs
  a = argparse.Namespace(digits_epochs=0, epochs=epochs, pool=pool, test=args.test,
                         model=args.model, meta_per_class=args.meta_per_class, set=args.set)
  return bench_runs.launch(a, "cifar_shaped", seeds, together, workdir)


def epoch_part(args, root: str) -> dict:
  """Two epochs: the first includes compilation, the second is a full epoch's steady cost
  (steps, evaluation, checkpoints)."""
  r = _launch(args, [0], False, args.pool, 2, os.path.join(root, "epoch"))
  first, second = r["epoch_time_s"]
  spe = r["steps"] // 2
  return {"steps": spe, "epoch_s": second, "epoch_s_with_compile": first,
          "steps_per_s": spe / second, "time_split_s": r["timing"]["seconds"],
          "process_wall_s": r["wall_s"], "peak_mem_mb": r["peak_mem_mb"],
          "peak_mem_source": r["peak_mem_source"]}


def seeds_part(args, root: str) -> dict:
  out = {}
  for k in args.ks:
    r = _launch(args, list(range(k)), k > 1, args.seeds_pool, 1,
                os.path.join(root, f"seeds{k}"))
    sps = r["steps"] / r["timing"]["seconds"]["steps"]  # steps of every run, per second
    out[k] = {"steps_per_s_per_run": sps, "run_steps_per_s": k * sps,
              "cifar80_runs_per_hour": 3600 * k * sps / CIFAR_STEPS,
              "compile_s": r["timing"]["seconds"]["compile"], "peak_mem_mb": r["peak_mem_mb"]}
    print(f"seeds K={k}: {k * sps:.2f} run-steps/s", file=sys.stderr, flush=True)
  base = out[min(out)]["run_steps_per_s"] / min(out)
  for k, row in out.items():
    row["throughput_vs_k_single"] = row["run_steps_per_s"] / (k * base)
  return out


def summary(res: dict) -> str:
  v = res["versions"]
  lines = [f"jax {v['jax']} on {v['backend']} ({v['device_kind']} x{v['device_count']})", "",
           "| step | ms | compile s | peak MB |", "|---|---|---|---|"]
  for key, r in res["step"].items():
    lines.append(f"| {key} | {r['step_ms']:.2f} | {r['compile_s']:.1f} | "
                 f"{r['peak_mem_mb']:.0f} ({r['peak_mem_source']}) |")
  e = res["epoch"]
  lines += ["", f"one CIFAR-shaped epoch ({e['steps']} steps): {e['epoch_s']:.1f} s "
            f"(the first: {e['epoch_s_with_compile']:.1f} s with compilation), "
            f"{e['steps_per_s']:.1f} "
            f"steps/s, peak {e['peak_mem_mb']:.0f} MB", "",
            "| K seeds | run-steps/s | 80-epoch CIFAR runs/hour | vs K x one run | peak MB |",
            "|---|---|---|---|---|"]
  for k, r in res["seeds"].items():
    lines.append(f"| {k} | {r['run_steps_per_s']:.2f} | {r['cifar80_runs_per_hour']:.2f} | "
                 f"{r['throughput_vs_k_single']:.2f} | {r['peak_mem_mb']:.0f} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--json", default=None)
  p.add_argument("--model", default="resnet32")
  p.add_argument("--batch", type=int, default=100, help="step part: batch size")
  p.add_argument("--steps", type=int, default=20, help="step part: timed steps (>= 10)")
  p.add_argument("--pool", type=int, default=50_000, help="epoch part: synthetic pool")
  p.add_argument("--meta-per-class", type=int, default=100)
  p.add_argument("--test", type=int, default=10_000)
  p.add_argument("--seeds-pool", type=int, default=11_000, help="seeds part: synthetic pool")
  p.add_argument("--ks", default="1,2,4,8")
  p.add_argument("--set", action="append", help="config override key=value (epoch, seeds)")
  args = p.parse_args(argv)
  args.ks = sorted({int(k) for k in args.ks.split(",") if k})
  if args.steps < 10 or not args.ks or min(args.ks) < 1:
    print("error: --steps >= 10; --ks positive integers", file=sys.stderr)
    return 2
  root = tempfile.mkdtemp(prefix="gpu_check_")
  try:
    res = {"versions": versions(), "step": step_part(args), "epoch": epoch_part(args, root),
           "seeds": seeds_part(args, root)}
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(summary(res))
  if args.json:
    fileio.write_json(args.json, res)
  return 0


if __name__ == "__main__":
  sys.exit(main())
