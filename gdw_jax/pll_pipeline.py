"""PRODEN -> CMW-Net on partial labels, as one launch (CMW-Net TPAMI §7.1, Fig. 9).

    python -m gdw_jax.pll_pipeline --config=configs/digits.py --config.partial_rate=0.3 \
        --workdir=runs/digits_pll_q03

The official "PRODEN + CMW-Net" is a three-stage pipeline, not a reweighted PRODEN loss
(``../shared/specs/partial_label.md`` §5). In ``workdir``:

* ``stage_a/``: PRODEN (``config.method`` is replaced by ``proden``) for ``pll.pseudo_label_epoch``
  epochs (40); its confidence table after the last of them is the snapshot (``stage_a/
  confidence.npz``). The official stage-A script is missing: its recipe (``pll.stage_a_recipe``:
  ``proden``, PRODEN's searched ResNet setting lr 5e-2 / L2 1e-3, constant lr; ``''`` keeps the
  dataset config's optimizer) and whether ``labels_40.pth`` was saved before or after epoch 40's
  training are our choices (after: the table after 40 full epochs).
* ``stage_b/pseudo_labels.npz``: ``argmax`` of the table per sample (ties: the smallest class
  index, as ``torch.max``), always a candidate; with how many equal the true label (where known).
  Candidate sets are not used after this.
* ``stage_c/``: a fresh classifier trained by CMW-Net on the pseudo-labels as given noisy labels
  (through ``label_file``), recipe ``configs/recipes.py: proden_cmwnet_stage_c`` (warm-up 45/120
  epochs of plain CE, meta step every 20 iterations on the 10 smallest-loss samples of every
  pseudo-class, rebuilt every epoch), ``pll.stage_c_epochs`` epochs (0: ``config.num_epochs``).

Each stage is an ordinary run (checkpointed): a launch killed in any stage and started again
with the same command skips the finished stages and resumes the interrupted one. Stage C needs a
source that takes ``label_file`` (digits, cifar10, cifar100). ``pipeline.json`` sums it up.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict

import flax.serialization
import numpy as np
from absl import app, logging
from ml_collections import config_flags

from configs import recipes
from gdw_jax import cpu_flags, fileio, options, train, validation
from gdw_jax import main as cli
from gdw_jax.validation import ConfigError

STAGES = ("stage_a", "stage_b", "stage_c")
LABEL_FILE_SOURCES = ("digits", "cifar10", "cifar100")  # sources that take label_file


def stage_a_config(config):
  """PRODEN on the run's candidate sets for ``pll.pseudo_label_epoch`` epochs, no meta set."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    if c.pll.stage_a_recipe:
      recipes.apply(c, c.pll.stage_a_recipe)
    c.method, c.num_epochs, c.meta_per_class = "proden", int(c.pll.pseudo_label_epoch), 0
    c.seeds = ()
  return c


def stage_c_config(config, label_file: str):
  """CMW-Net on the pseudo-labels (``label_file``), no candidate sets, a fresh classifier."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    if c.pll.stage_c_epochs:
      c.num_epochs = int(c.pll.stage_c_epochs)
    recipes.apply(c, "proden_cmwnet_stage_c")
    c.partial_rate, c.noise_type, c.noise_rate = 0.0, "none", 0.0
    c.label_file, c.seeds = label_file, ()
  return c


def pseudo_labels(confidence: np.ndarray) -> np.ndarray:
  """``argmax_j W_ij``; ties resolve to the smallest index (numpy's and torch's argmax)."""
  return np.argmax(confidence, axis=1).astype(np.int64)


def _snapshot(workdir: str) -> Dict[str, np.ndarray]:
  """Stage A's final confidence table with its candidate sets and pool positions."""
  a = os.path.join(workdir, "stage_a")
  with open(os.path.join(a, "method_state.msgpack"), "rb") as f:
    state = flax.serialization.msgpack_restore(f.read())
  labels = np.load(os.path.join(a, "labels.npz"))
  out = {"confidence": np.asarray(state["confidence"]),
         "candidates": np.asarray(state["candidates"]),
         "train_indices": labels["train_indices"]}
  if "true_labels" in labels:
    out["true_labels"] = labels["true_labels"]
  return out


def stage_b(workdir: str) -> Dict[str, Any]:
  """Pseudo-labels from stage A's table: ``stage_b/pseudo_labels.npz`` and the pool-wide
  ``stage_b/label_file.npy`` stage C trains on. Returns the summary."""
  snap = _snapshot(workdir)
  fileio.save_npz(os.path.join(workdir, "stage_a", "confidence.npz"), **snap)
  y = pseudo_labels(snap["confidence"])
  rows = np.arange(len(y))
  if not snap["candidates"][rows, y].all():
    raise RuntimeError("a pseudo-label outside its candidate set (the table is broken)")
  pool = snap["train_indices"]
  if not np.array_equal(np.sort(pool), np.arange(len(pool))):
    raise ConfigError("the PRODEN -> CMW-Net pipeline trains on the whole pool (no held-out "
                      "meta set or imbalance): set imbalance_factor=1")
  full = np.zeros(len(pool), np.int64)
  full[pool] = y
  b = os.path.join(workdir, "stage_b")
  fileio.makedirs(b)
  summary = {"num_train": int(len(y)), "mean_candidates": float(snap["candidates"].sum(1).mean())}
  extra = {}
  if "true_labels" in snap:
    correct = int(np.sum(y == snap["true_labels"]))
    summary.update(num_correct=correct, pseudo_label_acc=correct / len(y))
    extra["true_labels"] = snap["true_labels"]
  fileio.save_npz(os.path.join(b, "pseudo_labels.npz"), pseudo_labels=y, train_indices=pool,
                  **extra)
  fileio.atomic(os.path.join(b, "label_file.npy"), lambda p: np.save(p, full))
  fileio.write_json(os.path.join(b, "summary.json"), summary)  # last: stage B is done
  return summary


def check_options(config) -> None:
  """``config.pll`` (one-line :class:`ConfigError` naming the key)."""
  options.present(config, "pll")
  options.number(config.pll, "pseudo_label_epoch", 1, integer=True, prefix="pll.")
  options.number(config.pll, "stage_c_epochs", 0, integer=True, prefix="pll.")
  options.check(config.pll.stage_a_recipe in ("",) + recipes.names(),
                f"unknown pll.stage_a_recipe {config.pll.stage_a_recipe!r}; valid: '', "
                f"{', '.join(recipes.names())}")
  options.check(not config.seeds, "pll_pipeline runs one seed per launch (set seed, not seeds)")
  options.check(config.dataset in LABEL_FILE_SOURCES,
                f"pll_pipeline: stage C trains on the pseudo-labels through label_file, which "
                f"dataset {config.dataset!r} does not take; use one of "
                f"{', '.join(LABEL_FILE_SOURCES)}")
  options.check(config.partial_rate > 0, "pll_pipeline needs generated candidate sets: set "
                                         "partial_rate in (0, 1)")
  options.check(config.imbalance_factor == 1.0 and not config.label_file,
                "pll_pipeline trains on the whole pool with generated candidate sets: drop "
                "imbalance_factor and label_file")


def run(config, workdir: str) -> Dict[str, Any]:
  """The three stages in ``workdir`` (module docstring); resumes a killed launch. Returns the
  summary written to ``pipeline.json``."""
  check_options(config)
  validation.validate(stage_a_config(config))
  validation.validate(stage_c_config(config, ""))
  a, b, c = (os.path.join(workdir, s) for s in STAGES)
  if not os.path.exists(os.path.join(a, "final.json")):
    train.train_and_evaluate(stage_a_config(config), a)
  summary_path = os.path.join(b, "summary.json")
  pseudo = _read_json(summary_path) if os.path.exists(summary_path) else stage_b(workdir)
  final_c = train.train_and_evaluate(stage_c_config(config, os.path.join(b, "label_file.npy")), c)
  out = {"stage_a": _read_json(os.path.join(a, "final.json")), "stage_b": pseudo,
         "stage_c": final_c}
  fileio.write_json(os.path.join(workdir, "pipeline.json"), out)
  return out


def _read_json(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not cli.FLAGS["verbosity"].present:  # as gdw_jax.main: no orbax INFO lines
    logging.set_verbosity(logging.WARNING)
  added = cpu_flags.apply(dtype=cli.FLAGS.config.dtype)  # before JAX's backends start
  if added:
    print(cpu_flags.describe(added), file=sys.stderr)
  try:
    validation.check_overrides(cli.FLAGS.config,
                               config_flags.get_override_values(cli.FLAGS["config"]))
    out = run(cli.FLAGS.config, cli.FLAGS.workdir)
  except ConfigError as e:
    print(f"gdw_jax: error: {e}", file=sys.stderr)
    sys.exit(2)
  b, c = out["stage_b"], out["stage_c"]
  print(f"stage A (PRODEN, {out['stage_a']['num_epochs']} epochs): last_acc="
        f"{out['stage_a']['last_acc']:.2f}")
  if "pseudo_label_acc" in b:
    print(f"stage B: {b['num_correct']}/{b['num_train']} pseudo-labels are the true label "
          f"({100 * b['pseudo_label_acc']:.2f}%)")
  print(f"stage C (CMW-Net): last5_acc={c['last5_acc']:.2f} best_acc={c['best_acc']:.2f} "
        f"last_acc={c['last_acc']:.2f} -> {os.path.join(cli.FLAGS.workdir, 'pipeline.json')}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli._parse_flags)  # pylint: disable=protected-access
