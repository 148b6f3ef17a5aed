"""Config validation in one place, before any work starts (nothing is written on error).

Three stages, all run by :func:`gdw_jax.runs.setup` / ``train_and_evaluate`` before the workdir
is touched:

* :func:`validate`: the config alone: names (with the valid list), types, ranges and
  inconsistent combinations (an option group the chosen method never reads, nesterov without
  momentum, multi-host settings without ``distributed``, ...);
* :func:`build_data` + :func:`validate_data`: what needs the data and the devices (missing data
  files, a meta set larger than a class, batch sizes vs. the training set and the device count);
* :func:`validate_workdir`: the workdir is a directory and, if it already holds a run, the same
  config (so a restart resumes that run instead of mixing two).

Every error is a :class:`ConfigError` with a one-line message.
"""
from __future__ import annotations

import json
import numbers
import os

from gdw_jax import (bilevel, data, interop, lease, losses, methods, metrics, models, optim,
                     options)
from gdw_jax.data import host_transforms
from gdw_jax.data import noise as data_noise
from gdw_jax.data import own
from gdw_jax.options import ConfigError
from gdw_jax.options import check as _check
from gdw_jax.options import flag as _flag
from gdw_jax.options import number as _number
from gdw_jax.options import one_of as _one_of
from gdw_jax.options import present as _present

# Keys that change how a run executes, not what it computes: they may differ when a workdir is
# resumed. (num_devices changes float summation order only: a resume on another device count
# continues the run, just not bit-identically.)
RUNTIME_KEYS = ("progress", "tensorboard", "checkpoint", "checkpoint_every_steps",
                "keep_checkpoints", "checkpoint_best", "num_devices", "distributed",
                "coordinator_address", "num_processes", "process_id", "data_placement",
                "steps_per_call", "plugins", "stream_workers", "stream_threads", "stream_prefetch",
                "restart", "break_lease", "lease_stale_s")

DATA_PLACEMENTS = ("auto", "device", "host")

BOOL_KEYS = ("drop_last", "nesterov", "progress", "checkpoint", "checkpoint_best", "tensorboard",
             "noise_on_given_labels",
             "meta_from_train", "allow_missing_meta_classes", "skip_bad_images",
             "image_normalize", "image_flip",
             "distributed", "restart", "break_lease")


def _bool(config, key) -> None:
  _present(config, key)
  value = config[key]
  _check(isinstance(value, bool), f"{key} must be True or False, got {value!r}")


def check_overrides(config, keys) -> None:
  """Options given on the command line (``keys``, e.g. ``vnet.lr``) that the chosen method never
  reads: almost always a mistake (e.g. a weight-net option on erm). Config files may tune every
  method's group on purpose, so only explicit overrides are checked. Each method declares the
  groups it reads (``MethodSpec.groups``)."""
  methods.load_plugins(config.plugins)
  if config.method not in methods.names():
    return  # validate() reports the unknown name
  reads = {g.name for g in methods.spec(config.method).groups}
  declared = {g.name for g in methods.option_groups()}
  for key in keys:
    group = key.split(".", 1)[0]
    if group in declared and group not in reads and "." in key:
      users = ", ".join(s.name for s in sorted(methods.specs(), key=lambda s: s.name)
                        if group in {g.name for g in s.groups})
      raise ConfigError(f"--config.{key} is set but method {config.method} does not read the "
                        f"{group} options (methods that do: {users})")


def validate(config) -> None:
  """Raise :class:`ConfigError` on the first inconsistency in ``config`` alone.

  Imports ``config.plugins`` first (their methods register themselves), then checks the generic
  keys, the base loss, and the chosen method's option groups and its own checks.
  """
  _present(config, "plugins")
  try:
    methods.load_plugins(config.plugins)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _one_of(config, "method", methods.names())
  _one_of(config, "dataset", data.dataset_names())
  _one_of(config, "model", models.names())
  _one_of(config, "noise_type", data.NOISE_TYPES)
  _validate_noise_options(config)
  _one_of(config, "imbalance_type", data.IMBALANCE_TYPES)
  _one_of(config, "split_rng", data.SPLIT_RNGS)
  _number(config, "meta_seed", -1, integer=True)
  _one_of(config, "lr_schedule", optim.LR_SCHEDULES)
  _one_of(config, "hypergrad", bilevel.HYPERGRADS)
  _one_of(config, "dtype", ("float32", "float64"))
  for key in BOOL_KEYS:
    _bool(config, key)
  _one_of(config, "bn_running_var", models.resnet_cifar.BN_RUNNING_VAR)
  _number(config, "noise_rate", 0.0, 1.0)
  _validate_partial(config)
  _number(config, "imbalance_factor", 0.0, 1.0, lo_open=True)
  _number(config, "batch_size", 1, integer=True)
  _number(config, "num_epochs", 1, integer=True)
  _number(config, "meta_per_class", 0, integer=True)
  _number(config, "meta_batch_size", 0, integer=True)
  _number(config, "learning_rate", 0.0, lo_open=True)
  _number(config, "momentum", 0.0, 1.0)
  _number(config, "weight_decay", 0.0)
  _number(config, "seed", 0, integer=True)
  _number(config, "prob_clamp", 0.0, 1.0, lo_open=True)
  _number(config, "eval_batch_size", 1, integer=True)
  _check(not config.nesterov or config.momentum > 0, "nesterov=True needs momentum > 0")
  _validate_optimizer_options(config)
  if config.lr_schedule == "step_epoch":
    _number(config, "lr_decay", 0.0, lo_open=True)
    ms = tuple(config.lr_milestones or ())
    _check(all(isinstance(m, numbers.Integral) and not isinstance(m, bool) and m > 0 for m in ms)
           and list(ms) == sorted(set(ms)),
           f"lr_milestones must be increasing positive epoch numbers, got {ms}")
  _one_of(config, "classifier_head", models.HEADS)
  _number(config, "lr_warmup_epochs", 0, integer=True)
  _validate_loss(config)
  _validate_own_data(config)
  validate_input_pipeline(config)
  _validate_method(config)
  _validate_run_options(config)
  _validate_precision_and_init(config)  # last: init_from reads the checkpoint


def _validate_precision_and_init(config) -> None:
  """``compute_dtype`` (mixed precision) and ``init_from`` (pretrained PyTorch weights: the file
  is read and checked against the model here, before anything is written)."""
  _present(config, "compute_dtype")
  valid = models.precision.COMPUTE_DTYPES
  _check(config.compute_dtype in valid, f"unknown compute_dtype {config.compute_dtype!r}; valid: "
                                        f"'' (same as dtype), {', '.join(valid[1:])}")
  if config.compute_dtype not in ("", config.dtype):
    _check(config.dtype == "float32", f"compute_dtype={config.compute_dtype} needs "
                                      f"dtype=float32 (the parameters' dtype), got {config.dtype}")
    mixed = [m for m in models.names() if models.supports_compute_dtype(m)]
    _check(models.supports_compute_dtype(config.model),
           f"compute_dtype={config.compute_dtype}: model {config.model} computes in its "
           f"parameter dtype only; models with mixed precision: {', '.join(mixed)}")
  _present(config, "init_from")
  if config.init_from:
    try:
      interop.check_init_from(config.init_from, config.model)
    except interop.CheckpointError as e:
      raise ConfigError(f"init_from {e}") from None


def _validate_partial(config) -> None:
  """``partial_rate`` (0: off, else in (0, 1)), ``partial_type``, and the method can use them."""
  _present(config, "partial_rate")
  q = config.partial_rate
  _check(isinstance(q, numbers.Real) and not isinstance(q, bool) and (q == 0 or 0 < q < 1),
         f"partial_rate must be in (0, 1) (0: no generated candidate sets), got {q!r}")
  _one_of(config, "partial_type", data.PARTIAL_TYPES)
  if q > 0:
    _check_candidate_use(config, "partial_rate=" + str(q))


def _check_candidate_use(config, why: str) -> None:
  """A method that cannot train on candidate sets is refused when the run has them."""
  spec = methods.spec(config.method)
  _check(spec.candidates != "no",
         f"method {config.method} cannot use candidate sets ({why}); methods that can: "
         f"{', '.join(s.name for s in methods.specs() if s.candidates != 'no')}")


def validate_candidates(config, candidates) -> None:
  """The built data's candidate sets against the method: given to a method that cannot use
  them, or missing for one that needs them (before anything is written)."""
  if candidates is not None:
    where = (f"partial_rate={config.partial_rate}" if config.partial_rate else
             f"dataset {config.dataset} gives candidate sets")
    _check_candidate_use(config, where)
  else:
    _check(methods.spec(config.method).candidates != "required",
           f"method {config.method} needs candidate sets: set partial_rate in (0, 1), or give "
           f"them (npz key candidates, or a candidates column in label_csv)")


def _validate_noise_options(config) -> None:
  """The asym generator and class map, the label file path (its content is checked on load)."""
  _one_of(config, "asym_generator", data.ASYM_GENERATORS)
  for key in ("class_map", "label_file"):
    _present(config, key)
    _check(isinstance(config[key], str), f"{key} must be a string, got {config[key]!r}")
  if config.class_map:
    try:
      data_noise.parse_class_map(config.class_map)
    except ValueError as e:
      raise ConfigError(str(e)) from None


def _validate_optimizer_options(config) -> None:
  """Gradient clipping, per-parameter L2 and the warm-restart schedule's keys."""
  _number(config, "grad_clip_norm", 0.0)
  _present(config, "weight_decay_overrides")
  try:
    optim.parse_weight_decay_overrides(config.weight_decay_overrides)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if config.lr_schedule == "cosine_restarts":
    _number(config, "lr_restart_epoch", 0, integer=True)
    options.before_last_epoch(config, "lr_restart_epoch", config.lr_restart_epoch)
    _number(config, "lr_restart_period", 1, integer=True)
    _number(config, "lr_restart_mult", 1, integer=True)
    _number(config, "lr_min", 0.0)
    _check(config.lr_min <= config.learning_rate,
           f"lr_min {config.lr_min} is above learning_rate {config.learning_rate}")


def _validate_own_data(config) -> None:
  """The keys of a user's own data (gdw_jax/data/own.py); files are checked when read."""
  _one_of(config, "given_labels", own.GIVEN_LABELS)
  _number(config, "num_classes", 0, integer=True)
  _number(config, "image_size", 0, integer=True)
  _one_of(config, "image_channels", (0, 1, 3))
  _number(config, "image_crop_pad", 0, integer=True)
  _number(config, "label_score_epochs", 1, integer=True)
  for key in ("data_path", "data_root", "label_csv", "meta_root", "test_root", "tfds_name",
              "data_dir", "tfds_train_split", "tfds_test_split", "tfds_meta_split",
              "tfds_image_key", "tfds_label_key", "trusted_ids", "label_corrections"):
    _present(config, key)
    _check(isinstance(config[key], str), f"{key} must be a string, got {config[key]!r}")
  needs = {"npz": "data_path", "folder": "data_root", "tfds": "tfds_name"}
  if config.dataset in needs:
    key = needs[config.dataset]
    _check(bool(config[key]), f"dataset={config.dataset} needs {key} (docs/own_data.md)")


# Sources whose images can be streamed (files or tfds records; the others are arrays already).
STREAM_SOURCES = ("folder", "list", "tfds", "clothing1m", "animal10n", "mini_webvision",
                  "webfg496")
# Keys only the streaming path reads, with their defaults.
STREAM_ONLY = {"image_resize": 0, "image_train_crop": "random", "image_scale_min": 0.08,
               "image_color_jitter": 0.0}


def validate_input_pipeline(config) -> None:
  """``input_pipeline`` and its keys: the host transforms, grain's options, normalisation, and
  the list / real-noise sources' keys (files are checked when read)."""
  _one_of(config, "input_pipeline", ("memory", "stream"))
  stream = config.input_pipeline == "stream"
  for key in ("train_list", "meta_list", "test_list", "imagenet_val_root"):
    _present(config, key)
    _check(isinstance(config[key], str), f"{key} must be a string, got {config[key]!r}")
  _number(config, "webvision_classes", 1, 1000, integer=True)
  _check(config.dataset != "list" or bool(config.train_list),
         "dataset=list needs train_list (docs/real_noise.md)")
  if config.dataset in ("clothing1m", "animal10n", "mini_webvision", "webfg496"):
    _check(bool(config.data_root), f"dataset={config.dataset} needs data_root (the dataset's "
                                   f"folder; docs/real_noise.md)")
  _check_mean_std(config)
  if not stream:
    changed = [k for k, v in STREAM_ONLY.items() if config[k] != v]
    _check(not changed, f"{', '.join(changed)}: only with input_pipeline=stream (the "
                        f"in-memory path augments with image_crop_pad / image_flip)")
    return
  _check(config.dataset in STREAM_SOURCES,
         f"input_pipeline=stream reads image files or tfds records; dataset={config.dataset} "
         f"is held in memory (streamable: {', '.join(STREAM_SOURCES)})")
  _number(config, "image_size", 1, integer=True)
  _check(config.data_placement != "device", "data_placement=device keeps the images on the "
                                            "device; input_pipeline=stream decodes each "
                                            "step's batch on the host (use auto or host)")
  _check(config.image_crop_pad == 0, "image_crop_pad is the in-memory path's crop; with "
                                     "input_pipeline=stream use image_resize and "
                                     "image_train_crop")
  _one_of(config, "image_train_crop", host_transforms.CROPS)
  _number(config, "image_resize", 0, integer=True)
  _check(config.image_resize == 0 or config.image_resize >= config.image_size
         or config.image_train_crop == "random_resized",
         f"image_resize {config.image_resize} is smaller than image_size {config.image_size} "
         f"(the crop is taken from the resized image)")
  _number(config, "image_scale_min", 0.0, 1.0, lo_open=True)
  _number(config, "image_color_jitter", 0.0, 1.0)
  _number(config, "stream_workers", 0, integer=True)
  _number(config, "stream_threads", 1, integer=True)
  _number(config, "stream_prefetch", 1, integer=True)


def _check_mean_std(config) -> None:
  mean, std = config.image_mean, config.image_std
  ok = all(isinstance(v, (tuple, list)) and all(isinstance(a, numbers.Real) and
                                                not isinstance(a, bool) for a in v)
           for v in (mean, std))
  _check(ok, f"image_mean / image_std must be tuples of numbers, got {mean!r} / {std!r}")
  _check(len(mean) == len(std), f"image_mean has {len(mean)} values but image_std {len(std)}")
  _check(all(s > 0 for s in std), f"image_std must be > 0, got {tuple(std)}")


def _meta_hint(config) -> str:
  """How to give a meta set, for the data this config reads."""
  if config.dataset not in own.SOURCES:
    return "set meta_per_class >= 1"
  if config.meta_per_class == 0:
    return f"set meta_per_class >= 1 if the labels are clean; else {own.TRUSTED_SET_HOWTO}"
  return own.TRUSTED_SET_HOWTO


def _validate_method(config) -> None:
  """The chosen method's option groups, its own checks, and its meta set."""
  spec = methods.spec(config.method)
  for group in spec.groups:
    options.group_present(config, group)
    if group.validate is not None:
      group.validate(config)
  if spec.validate is not None:
    spec.validate(config)
  if spec.needs_meta(config):
    _check(config.meta_per_class >= 1,
           f"method {config.method} needs a meta set: meta_per_class must be >= 1")


def _validate_loss(config) -> None:
  """``config.loss`` as the method sees it (the loss baselines force some of its keys)."""
  _present(config, "loss")
  for key in losses.LOSS_KEYS:
    _present(config.loss, key, "loss.")
  s = methods.loss_settings(config)
  p = "loss."
  _one_of(s, "name", losses.LOSS_NAMES, p)
  _one_of(s, "class_weights", losses.CLASS_WEIGHTS, p)
  _one_of(s, "reduction", losses.REDUCTIONS, p)
  _number(s, "cb_beta", 0.0, 1.0, hi_open=True, prefix=p)
  _flag(s, "drw", p)
  _number(s, "drw_epoch", 0, integer=True, prefix=p)
  _number(s, "focal_gamma", 0.0, prefix=p)
  _number(s, "ldam_max_m", 0.0, lo_open=True, prefix=p)
  _number(s, "ldam_s", 0.0, lo_open=True, prefix=p)
  _number(s, "sce_alpha", 0.0, prefix=p)
  _number(s, "sce_beta", 0.0, prefix=p)
  _check(s["sce_alpha"] + s["sce_beta"] > 0, "loss.sce_alpha + loss.sce_beta must be > 0")
  _number(s, "tce_q", 0.0, 1.0, lo_open=True, prefix=p)
  _number(s, "tce_k", 0.0, 1.0, lo_open=True, hi_open=True, prefix=p)
  _number(s, "logit_tau", 0.0, prefix=p)
  if s["drw"]:
    _check(s["class_weights"] != "none", "loss.drw defers class weights: set loss.class_weights")
    options.before_last_epoch(config, "loss.drw_epoch", s["drw_epoch"])


def _validate_seeds(config) -> None:
  seeds = config.seeds
  _check(isinstance(seeds, (tuple, list)) and all(
      isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in seeds),
         f"seeds must be non-negative integers (e.g. --config.seeds=0,1,2), got {seeds!r}")
  _check(len(set(seeds)) == len(seeds), f"seeds has a repeated seed: {tuple(seeds)}")


def _validate_run_options(config) -> None:
  """Runs, input path, devices, multi-host, checkpoints and logging."""
  _present(config, "seeds")
  _one_of(config, "data_placement", DATA_PLACEMENTS)
  _number(config, "steps_per_call", 0, integer=True)
  _number(config, "num_devices", 0, integer=True)
  _number(config, "checkpoint_every_steps", 0, integer=True)
  _number(config, "keep_checkpoints", 1, integer=True)
  if config.checkpoint:
    _check(config.keep_checkpoints >= 2,
           "keep_checkpoints must be >= 2 (a checkpoint that cannot be restored falls back to the "
           "one before; with seeds, a kill between the runs' saves must leave a step all have)")
  _validate_seeds(config)
  _number(config, "lease_stale_s")
  _check(config.lease_stale_s >= 2 * lease.BEAT_SECONDS,
         f"lease_stale_s must be at least {2 * lease.BEAT_SECONDS:g} (seconds; the lease's "
         f"heartbeat comes every {lease.BEAT_SECONDS:g} s), got {config.lease_stale_s:g}")
  if config.tensorboard:
    reason = metrics.tensorboard_available()
    _check(reason is None, reason or "")
  if config.coordinator_address:
    _check(config.distributed,
           "coordinator_address is set but distributed=False; set distributed=True")
    _number(config, "num_processes", 1, integer=True)
    _number(config, "process_id", 0, config.num_processes, hi_open=True, integer=True)
  elif config.num_processes or config.process_id not in (-1, None):
    raise ConfigError("num_processes / process_id need coordinator_address (or leave all three "
                      "unset to auto-detect the cluster)")


def build_data(config, source=None):
  """``data.build(config, source)`` with data errors (missing files, impossible splits) as
  ConfigError."""
  return _data_errors(config, lambda: data.build(config, source))


def load_source(config):
  """``config.dataset``'s source (loaded once for several seeds), errors as ConfigError."""
  return _data_errors(config, lambda: data.sources.load(config.dataset, config))


def _data_errors(config, build):
  try:
    return build()
  except FileNotFoundError as e:
    name = e.filename or str(e).splitlines()[0]
    raise ConfigError(f"dataset {config.dataset!r}: missing data {name}") from None
  except (ValueError, OSError) as e:  # e.g. meta set larger than a class, imbalance emptying one
    raise ConfigError(" ".join(str(e).split())) from None


def validate_devices(config, available: int) -> None:
  """``num_devices`` against the ``available`` devices (after multi-host initialisation)."""
  n = config.num_devices
  _check(n <= available, f"num_devices={n} but only {available} device(s) are available")
  _check(not n or not config.distributed or n == available,
         f"num_devices={n} with distributed=True; multi-host runs use every device (set 0)")


def validate_data(config, num_train: int, num_devices: int) -> None:
  """Batch sizes against the data and the number of devices the global batch is split over."""
  bs = config.batch_size
  if config.drop_last:
    _check(bs <= num_train, f"batch_size {bs} is larger than the training set ({num_train}) "
                            f"with drop_last")
  _check(bs % num_devices == 0,
         f"batch_size {bs} does not divide over {num_devices} devices; use a multiple of "
         f"{num_devices} or set num_devices")
  last = num_train % bs
  _check(config.drop_last or last == 0 or last % num_devices == 0,
         f"with drop_last=False the last batch has {last} samples ({num_train} training "
         f"samples, batch_size {bs}), which does not divide over {num_devices} devices; set "
         f"drop_last=True, a batch_size whose last batch divides by {num_devices}, or "
         f"num_devices=1")


def validate_image_size(config, image_shape) -> None:
  """The data's images against the model's smallest input (``image_shape``: ``(H, W, C)``)."""
  need = models.min_image_size(config.model)
  if need and len(image_shape) == 3:
    _check(min(image_shape[:2]) >= need,
           f"model {config.model} needs images of at least {need}x{need} pixels; the data's are "
           f"{image_shape[0]}x{image_shape[1]} (set image_size, or choose another model)")


def validate_method(config, method, num_meta: int) -> None:
  """What only the built method knows: whether it needs a meta set."""
  _check(not method.uses_meta or num_meta > 0 or method.epoch_start is not None,
         f"method {config.method} needs a meta set, but it is empty ({_meta_hint(config)})")


def _comparable(config_dict):
  return {k: v for k, v in config_dict.items() if k not in RUNTIME_KEYS}


def validate_workdir(config, workdir: str) -> None:
  """The workdir is a directory, and any run already in it used the same config."""
  _check(bool(workdir), "workdir must be a non-empty path")
  _check(not os.path.exists(workdir) or os.path.isdir(workdir),
         f"workdir {workdir} exists and is not a directory")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError):
    raise ConfigError(f"workdir {workdir} has an unreadable config.json; use a new --workdir")
  new = _comparable(json.loads(config.to_json_best_effort()))
  old = _comparable(old)
  diff = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))
  _check(not diff, f"workdir {workdir} holds a run with a different config (differs in: "
                   f"{', '.join(diff[:6])}{', ...' if len(diff) > 6 else ''}); resume it with "
                   f"the same config or use a new --workdir")
