"""Analysis of finished runs: read a workdir, compute what the weighting learned, draw it.

    from gdw_jax import analysis
    run = analysis.load_run("runs/digits")
    analysis.write_report("runs/digits")            # report.md + figures/*.png + analysis.json
    fig = analysis.plots.learning_curves(run)       # any single figure, for a notebook

Modules: :mod:`workdir` (reading), :mod:`stats` (AUC, weight statistics, class-level maps,
per-class accuracy), :mod:`weight_fn` (the learned weight-vs-loss curves), :mod:`plots`
(figures), :mod:`report` (report.md for one run, comparisons of several).
"""
from gdw_jax.analysis import plots, report, stats, weight_fn, workdir
from gdw_jax.analysis.report import summarize, write_comparison, write_report
from gdw_jax.analysis.weight_fn import weight_function
from gdw_jax.analysis.workdir import Run, load_run

__all__ = ["Run", "load_run", "plots", "report", "stats", "summarize", "weight_fn",
           "weight_function", "workdir", "write_comparison", "write_report"]
