"""Reports for finished runs: ``report.md`` + PNG figures per workdir, and a comparison.

    python -m experiments.report runs/digits_gdw
    python -m experiments.report runs/erm runs/mwnet runs/gdw --out runs/comparison

Each workdir gets ``report.md``, ``figures/*.png`` and ``analysis.json`` (the trainer writes the
same at the end of a run; this regenerates them, e.g. for older runs). With several workdirs,
``--out`` (default: ``comparison/`` in their common parent) also gets a table of all runs and
overlaid curves. See ``docs/analysis.md`` for what each figure shows.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="run directories to analyse")
  p.add_argument("--out", default=None,
                 help="where the comparison of several runs goes (default: <common parent>/"
                      "comparison)")
  p.add_argument("--loss-max", type=float, default=10.0,
                 help="right end of the loss axis of weight-vs-loss curves (nats)")
  args = p.parse_args(argv)

  missing = [w for w in args.workdirs if not os.path.isdir(w)]
  if missing:
    print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
    return 2
  from gdw_jax.analysis import report  # after argument checks: keeps --help fast

  for w in args.workdirs:
    path = report.write_report(w, loss_max=args.loss_max)
    print(path)
  if len(args.workdirs) > 1:
    out = args.out or os.path.join(
        os.path.commonpath([os.path.abspath(w) for w in args.workdirs]), "comparison")
    print(report.write_comparison(args.workdirs, out, loss_max=args.loss_max))
  return 0


if __name__ == "__main__":
  sys.exit(main())
