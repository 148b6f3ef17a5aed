"""What a launch trains: one run, or several runs (seeds) side by side, and the files they leave.

A launch trains K >= 1 runs that differ only in their seed (``config.seeds``; one run:
``config.seed``). Each run is exactly the run its seed would be alone: its own split, label
corruption and meta set (its own :class:`gdw_jax.data.BiasedDataset`), initialisation, data
order, augmentation randomness and method state. Built once and shared: the data source's images
(:class:`Store`), the model, optimizer and learning-rate schedule, and the device mesh. The step
of K > 1 runs is one vmapped program (:mod:`gdw_jax.steps`).

A launch's pieces, for the batch providers (:mod:`gdw_jax.inputs`) and the loop
(:mod:`gdw_jax.loop`) above to build on; this module imports only the library (validation,
data, models, methods, optimizer, mesh, and the analysis that writes the end-of-run files), no
other layer of the trainer (``gdw_jax/train.py`` lists them). Read top to bottom:

* :func:`setup` -> :class:`Setup`: one run's data, model, method, schedule and optimizer from
  its config (validated first).
* :func:`prepare` -> :class:`Runs`: validation, each run's data and method, the image store, the
  mesh. Raises :class:`ConfigError` before anything is written.
* :class:`MetaSets`: each run's meta set for the current epoch: the held-out clean set, or the
  training samples the method picks at the epoch start (CMW-Net's ``epoch_start``).
* the files: :func:`write_start_files` (``config.json``, ``data.json``, ``labels.npz``) and
  :func:`write_end_files` (predictions, method state, sample weights, ``final.json``, report); for
  seeds, each run in ``<workdir>/seed_<s>/`` (a complete workdir, resumable on its own) plus
  :func:`write_summary` (``<workdir>/summary.json`` and ``summary.md``: mean ± std over seeds).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdw_jax import fileio, methods, models, optim, parallel, validation
from gdw_jax.analysis import label_issues, report, stats
from gdw_jax.data import image_table, pipeline
from gdw_jax.validation import ConfigError

SUMMARY_KEYS = ("last5_acc", "best_acc", "last_acc", "final_train_loss")
EXTRA_SUMMARY_KEYS = ("last5_acc", "best_acc", "last_acc", "last_top5_acc", "best_top5_acc")


@dataclasses.dataclass
class Store:
  """The images the runs train and meta-train on, held once, and each run's rows in them.

  With a shared source pool (every built-in dataset) ``images`` is the pool and the rows are the
  runs' ``train_indices`` / ``meta_indices``: K seeds cost one copy of the images, plus K small
  index and label arrays. Streamed data (``input_pipeline=stream``): ``images`` is an
  :class:`~gdw_jax.data.image_table.ImageTable`, rows decoded batch by batch.
  """
  images: np.ndarray       # [P, ...] uint8 as stored, otherwise in the run's dtype
  train_rows: np.ndarray   # [K, n] row of each run's training sample i
  meta_rows: np.ndarray    # [K, m] rows of each run's held-out meta set
  labels: np.ndarray       # [K, n] training labels each run sees (noisy)
  true_labels: np.ndarray  # [K, n] clean labels (logging only)
  meta_labels: np.ndarray  # [K, m]

  def train_images(self, k: int) -> np.ndarray:
    return self.images[self.train_rows[k]]


@dataclasses.dataclass
class Runs:
  """Everything a launch trains, built before anything is written."""
  config: Any                   # the launch config
  workdir: str
  seeds: Tuple[int, ...]
  configs: List[Any]            # per run: the launch config with its seed (and no seeds)
  workdirs: List[str]           # the launch workdir, or <workdir>/seed_<s> per seed
  datasets: list                # per run: BiasedDataset
  methods: list                 # per run: Method (the same function when the data agree)
  same_method: bool             # every run's method was built from the same DataInfo
  info: methods.DataInfo        # run 0's (sizes are the same for every run)
  model: Any
  schedule: Callable
  tx: Any
  mesh: Any
  store: Store
  dtype: Any

  @property
  def num_runs(self) -> int:
    return len(self.seeds)

  @property
  def batched(self) -> bool:
    """Several runs: every state and batch array has a leading runs axis (one vmapped step)."""
    return self.num_runs > 1

  @property
  def per_seed_dirs(self) -> bool:
    """``config.seeds`` given: runs in ``seed_<s>/`` plus a summary (even for one seed)."""
    return bool(self.config.seeds)

  @property
  def steps_per_epoch(self) -> int:
    return self.info.steps_per_epoch

  @property
  def total_steps(self) -> int:
    return self.config.num_epochs * self.info.steps_per_epoch

  @property
  def method(self):
    return self.methods[0]

  def phase(self, step: int):
    """The static phase of ``step`` (None for methods without phases), the same for every run."""
    phases = {m.phase(step) if m.phase is not None else None for m in self.methods}
    if len(phases) != 1:
      raise RuntimeError(f"the runs' methods disagree on the phase of step {step}: {phases}")
    return phases.pop()


def run_config(config, seed: int):
  """The config of one run of a launch: ``seed`` set, ``seeds`` empty (what it would be alone)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.seed = int(seed)
    c.seeds = ()
  return c


class Setup(NamedTuple):
  """One run's pieces, built from its config."""
  ds: Any          # gdw_jax.data.BiasedDataset
  info: methods.DataInfo
  model: models.ModelFns
  method: methods.Method
  schedule: Callable
  tx: optax.GradientTransformation


def setup(config, source=None, num_runs: int = 1) -> Setup:
  """Validate, build data, model, method and optimizer. Raises ConfigError on bad input.

  Starts the multi-host runtime if configured (before anything queries devices) and checks the
  batch sizes against the data and the device count, all before any file is written.
  ``source``: the loaded data source (shared by the runs of a launch); ``num_runs``: how many
  runs share the devices (each run's batch is split over the mesh's ``'data'`` axis).
  """
  validation.validate(config)
  parallel.initialize(config)
  validation.validate_devices(config, jax.device_count())
  if config.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  dtype = jnp.dtype(config.dtype)
  ds = validation.build_data(config, source)
  validation.validate_data(config, ds.num_train, parallel.data_axis_size(config, num_runs))
  validation.validate_image_size(config, ds.x_train.shape[1:])
  spe = pipeline.steps_per_epoch(ds.num_train, config.batch_size, config.drop_last)
  validation.validate_candidates(config, ds.candidates)
  info = methods.DataInfo(ds.num_classes, ds.num_train, ds.class_counts, spe, ds.candidates)
  model = models.get(config.model, ds.num_classes, methods.with_loss_overrides(config), dtype)
  try:  # e.g. a transfer file that is not a weighting net
    method = methods.get(config.method)(config, info)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  validation.validate_method(config, method, int(ds.y_meta.shape[0]))
  schedule = optim.lr_schedule(config, spe)
  tx = optim.classifier_optimizer(config)
  return Setup(ds, info, model, method, schedule, tx)


def prepare(config, workdir: str) -> Runs:
  """Validate ``config`` and ``workdir`` and build every run's inputs (nothing is written)."""
  validation.validate(config)
  seeds, configs, workdirs = _runs_of(config, workdir)
  validate_workdirs(config, workdir)
  # One source for every run (its images are kept once); one run loads it as before.
  source = None
  if len(seeds) > 1:
    parallel.initialize(config)
    source = validation.load_source(config)
  setups = [setup(c, source, num_runs=len(seeds)) for c in configs]
  datasets = [s.ds for s in setups]
  _check_runs_fit_one_program(config, seeds, datasets)
  infos = [s.info for s in setups]
  same = all(_same_info(infos[0], i) for i in infos[1:])
  first = setups[0]
  dtype = jax.numpy.dtype(config.dtype)
  return Runs(config=config, workdir=workdir, seeds=seeds, configs=configs, workdirs=workdirs,
              datasets=datasets, methods=[first.method] * len(seeds) if same else
              [s.method for s in setups], same_method=same, info=first.info,
              model=first.model, schedule=first.schedule, tx=first.tx,
              mesh=parallel.make_mesh(config, len(seeds)), store=make_store(datasets, dtype),
              dtype=dtype)


def _runs_of(config, workdir: str):
  """``(seeds, configs, workdirs)``: each run's seed, config and workdir."""
  seeds = tuple(int(s) for s in config.seeds) or (int(config.seed),)
  if config.seeds:
    return (seeds, [run_config(config, s) for s in seeds],
            [os.path.join(workdir, f"seed_{s}") for s in seeds])
  return seeds, [config], [workdir]


def validate_workdirs(config, workdir: str) -> None:
  """The launch's workdir and each run's: directories holding no run of another config
  (:class:`ConfigError`). Checked again once the launch holds the workdir's lease
  (:func:`gdw_jax.train.train_and_evaluate`): a launch that ended meanwhile may have left one."""
  _, configs, workdirs = _runs_of(config, workdir)
  validation.validate_workdir(config, workdir)
  for c, w in zip(configs, workdirs):
    validation.validate_workdir(c, w)


def _same_info(a: methods.DataInfo, b: methods.DataInfo) -> bool:
  # A method is a function of (config, DataInfo); the runs' configs differ only in the seed,
  # which methods do not read (their randomness comes from the state's rng).
  return (a.num_classes, a.num_train, a.steps_per_epoch) == (
      b.num_classes, b.num_train, b.steps_per_epoch) and np.array_equal(
          a.class_counts, b.class_counts) and (a.candidates is None) == (b.candidates is None) and (
          a.candidates is None or np.array_equal(a.candidates, b.candidates))


def _check_runs_fit_one_program(config, seeds, datasets) -> None:
  """Runs trained as one program need the same shapes: training, meta and test set sizes."""
  first = datasets[0]
  for s, ds in zip(seeds[1:], datasets[1:]):
    for what, a, b in (("training set", first.num_train, ds.num_train),
                       ("meta set", first.y_meta.shape[0], ds.y_meta.shape[0]),
                       ("classes", first.num_classes, ds.num_classes)):
      if a != b:
        raise ConfigError(f"seeds: seed {s} has {b} {what} samples, seed {seeds[0]} {a}; runs of "
                          f"one launch need equal sizes (run these seeds as separate launches)")
    if not (ds.x_test is first.x_test or np.array_equal(ds.x_test, first.x_test)):
      raise ConfigError(f"seeds: dataset {config.dataset!r} gives seed {s} another test set; "
                        f"run these seeds as separate launches")


def make_store(datasets: Sequence[Any], dtype) -> Store:
  """The images of every run once (the shared source pool when there is one)."""
  pool = datasets[0].x_pool
  if pool is not None and all(ds.x_pool is pool for ds in datasets):
    images = pool
    train_rows = [ds.train_indices for ds in datasets]
    meta_rows = [ds.meta_indices for ds in datasets]
  else:  # datasets built without a shared pool: each run's own images, one after the other
    parts, train_rows, meta_rows, offset = [], [], [], 0
    for ds in datasets:
      parts += [ds.x_train, ds.x_meta]
      train_rows.append(offset + np.arange(ds.num_train))
      meta_rows.append(offset + ds.num_train + np.arange(ds.y_meta.shape[0]))
      offset += ds.num_train + ds.y_meta.shape[0]
    images = (image_table.concat(parts) if isinstance(parts[0], image_table.ImageTable)
              else np.concatenate(parts))
  if images.dtype != np.uint8:  # uint8 images stay uint8: augment / preprocess convert on device
    images = np.asarray(images, dtype)
  return Store(images=images, train_rows=np.stack(train_rows).astype(np.int32),
               meta_rows=np.stack(meta_rows).astype(np.int32),
               labels=np.stack([ds.y_train for ds in datasets]),
               true_labels=np.stack([ds.y_train_true for ds in datasets]),
               meta_labels=np.stack([ds.y_meta for ds in datasets]))


def run_slice(tree, k: int, batched: bool):
  """Run ``k``'s part of a pytree with a leading runs axis (the tree itself for one run)."""
  return jax.tree.map(lambda a: a[k], tree) if batched else tree


class MetaSets:
  """Each run's meta set for the current epoch.

  The held-out clean set by default. A method with an ``epoch_start`` hook (CMW-Net's balanced
  or small-loss in-train meta set) picks training positions at every epoch start, from its own
  run's labels, seed and current model; the picks are recorded (``Recorder.meta_picked``) so a
  resumed run continues with the set its epoch started with. Runs of one launch must pick sets of
  equal size (one compiled meta batch shape).
  """

  def __init__(self, runs: Runs):
    self.runs = runs
    self.picked: List[Optional[np.ndarray]] = [None] * runs.num_runs

  @property
  def has_hook(self) -> bool:
    return self.runs.method.epoch_start is not None

  def rows_and_labels(self) -> Tuple[np.ndarray, np.ndarray]:
    """``[K, m]`` store rows and labels of every run's current meta set."""
    st = self.runs.store
    rows, labels = [], []
    for k, picked in enumerate(self.picked):
      if picked is None:
        rows.append(st.meta_rows[k])
        labels.append(st.meta_labels[k])
      else:
        rows.append(st.train_rows[k][picked])
        labels.append(st.labels[k][picked])
    sizes = {len(r) for r in rows}
    if len(sizes) != 1:
      raise RuntimeError(f"method {self.runs.config.method} picked meta sets of different sizes "
                         f"for the seeds ({sorted(sizes)}); run these seeds separately")
    return np.stack(rows), np.stack(labels)

  @property
  def size(self) -> int:
    return int(self.rows_and_labels()[0].shape[1])

  @property
  def batch_size(self) -> int:
    n, c = self.size, self.runs.config
    return min(c.meta_batch_size or c.batch_size, n) if n else 0

  def start_epoch(self, epoch: int, state, train_losses: Callable) -> None:
    """Each run's ``method.epoch_start`` (host side, outside jit). ``train_losses(k, params,
    model_state)``: run ``k``'s per-sample training CE (eval mode)."""
    runs = self.runs
    for k, method in enumerate(runs.methods):
      if method.epoch_start is None:
        continue
      st = run_slice(state, k, runs.batched)
      ds = runs.datasets[k]
      ectx = methods.EpochContext(
          epoch=epoch, seed=runs.seeds[k], labels=ds.y_train, class_counts=ds.class_counts,
          params=st.params, model_state=st.model_state,
          train_losses=lambda p, ms, k=k: train_losses(k, p, ms))
      self.picked[k] = method.epoch_start(ectx, st.method_state)

  def check(self) -> None:
    """The runs' meta sets have one size, and a method that needs one has one."""
    if self.runs.method.uses_meta and not self.size:
      raise RuntimeError(f"method {self.runs.config.method} needs a meta set but has none")


def check_meta_sets_fit(metasets: MetaSets) -> None:
  """Before anything is written: seeds whose methods pick meta sets of different sizes cannot
  share one program (CMW-Net's in-train sets have a fixed size per config, so epoch 0 tells)."""
  try:
    metasets.check()
  except RuntimeError as e:
    raise ConfigError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# Files


def write_start_files(runs: Runs) -> None:
  """Per run ``config.json``, ``data.json``, ``labels.npz`` (and the launch's ``config.json``)."""
  if not parallel.is_primary():
    return
  if runs.per_seed_dirs:
    fileio.write_json(os.path.join(runs.workdir, "config.json"),
                      json.loads(runs.config.to_json_best_effort()))
  for config, workdir, ds in zip(runs.configs, runs.workdirs, runs.datasets):
    fileio.makedirs(workdir)
    fileio.write_json(os.path.join(workdir, "config.json"),
                      json.loads(config.to_json_best_effort()))
    fileio.write_json(os.path.join(workdir, "data.json"), ds.summary())
    fileio.atomic(os.path.join(workdir, "labels.npz"), ds.save_labels)


def final_summary(config, ds, history, steps: int, num_devices: int,
                  wall_time: float) -> Dict[str, Any]:
  extra = {name: stats.accuracy_summary(history, name) for name in sorted(ds.extra_tests or {})}
  return {
      "method": config.method, "dataset": config.dataset, "noise_type": config.noise_type,
      "noise_rate": config.noise_rate, "imbalance_factor": config.imbalance_factor,
      "seed": config.seed, "num_epochs": config.num_epochs, "steps": steps,
      **stats.accuracy_summary(history), **({"extra_tests": extra} if extra else {}),
      "final_train_loss": history[-1]["train_loss"],
      "realised_noise_rate": ds.realised_noise_rate, "notes": list(ds.notes),
      "num_devices": num_devices, "num_processes": jax.process_count(),
      "wall_time_s": wall_time,
  }


def write_end_files(workdir: str, ds, recorder, test, method_state,
                    final: Dict[str, Any], train_eval: Dict[str, Any],
                    label_score_epochs: int) -> None:
  """One run's end-of-run files: test predictions, method state, per-sample weights,
  ``label_issues.csv`` (ranked from ``train_eval``, the final model on the training set), then
  ``final.json`` (written last: its presence means the run completed). The report follows
  (:func:`write_reports`)."""
  extra = {}  # further test sets' predictions and labels, by name
  for name, result in test.get("extra", {}).items():
    extra.update({f"{name}_pred": result["pred"], f"{name}_labels": ds.extra_tests[name][1]})
  fileio.save_npz(os.path.join(workdir, "predictions.npz"), test_pred=test["pred"],
                  test_labels=ds.y_test, **extra)
  fileio.write_bytes(os.path.join(workdir, "method_state.msgpack"),
                     flax.serialization.to_bytes(method_state))
  fileio.save_npz(os.path.join(workdir, "sample_weights.npz"),
                  instance_weight=recorder.instance_w, final_weights=recorder.epoch_w,
                  noisy_labels=ds.y_train,
                  **({"true_labels": ds.y_train_true} if ds.truth_known else {}))
  label_issues.write_for_run(label_issues.path_in(workdir), ds, train_eval, recorder.instance_w,
                             final["label_score"], label_score_epochs)
  fileio.write_json(os.path.join(workdir, "final.json"), final)


def write_reports(workdirs: Sequence[str]) -> None:
  """Each run's ``report.md`` and figures (about 3 s per run here, mostly drawing; worker
  processes were tried and lost on 2 cores: each must start JAX and matplotlib again)."""
  for workdir in workdirs:
    report.write_report(workdir)


def summarize(seeds: Sequence[int], finals: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """Mean and (population) standard deviation over the seeds of the headline numbers."""
  out = {"seeds": list(seeds), "method": finals[0]["method"], "dataset": finals[0]["dataset"],
         "runs": {str(s): f for s, f in zip(seeds, finals)}, "mean": {}, "std": {}}
  out["mean"], out["std"] = _mean_std(finals, SUMMARY_KEYS)
  for name in finals[0].get("extra_tests", {}):  # further test sets: their top-1 and top-5
    mean, std = _mean_std([f["extra_tests"][name] for f in finals], EXTRA_SUMMARY_KEYS)
    out.setdefault("extra_tests", {})[name] = {"mean": mean, "std": std}
  return out


def _mean_std(finals, keys):
  """``({key: mean}, {key: std})`` over the runs; None where a run has no value (no test set)."""
  mean, std = {}, {}
  for key in keys:
    if any(f.get(key) is None for f in finals):
      mean[key] = std[key] = None
      continue
    values = np.array([f[key] for f in finals], np.float64)
    mean[key], std[key] = float(values.mean()), float(values.std())
  return mean, std


def summary_table(summary: Dict[str, Any]) -> str:
  """A markdown table: one row per seed, then mean ± std."""
  keys = SUMMARY_KEYS
  lines = [f"{summary['method']} on {summary['dataset']}, {len(summary['seeds'])} seed(s)", "",
           "| seed | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
  for seed, final in summary["runs"].items():
    lines.append(f"| {seed} | " + " | ".join(_num(final[k], ".4g") for k in keys) + " |")
  lines.append("| mean ± std | " + " | ".join(
      f"{_num(summary['mean'][k], '.4g')} ± {_num(summary['std'][k], '.2g')}" for k in keys)
      + " |")
  return "\n".join(lines)


def _num(value, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def write_summary(workdir: str, summary: Dict[str, Any]) -> None:
  fileio.write_json(os.path.join(workdir, "summary.json"), summary)
  fileio.write_text(os.path.join(workdir, "summary.md"), summary_table(summary) + "\n")


def batch_size_of_step(n: int, batch_size: int, step_in_epoch: int) -> int:
  """Rows of a training batch (the last batch of an epoch may be smaller)."""
  return min(batch_size, n - step_in_epoch * batch_size)


def meta_batch_size_of_step(n_meta: int, batch_size: int, step_in_epoch: int) -> int:
  """Rows of the meta batch at ``step_in_epoch`` (the last batch of a pass over the meta set may
  be smaller; :func:`gdw_jax.data.pipeline.meta_batch_indices`)."""
  if not n_meta:
    return 0
  j = step_in_epoch % -(-n_meta // batch_size)
  return min(batch_size, n_meta - j * batch_size)
