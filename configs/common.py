"""Shared defaults and the ``file.py:key=value,...`` config-argument parser."""
import ast

import ml_collections

from gdw_jax import lease, losses, methods


def parse_arg(arg, **defaults):
  """Parse ``"a=1,b=x"`` into a dict, typed like ``defaults`` (unknown keys are an error)."""
  out = dict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    if not item:
      continue
    if "=" not in item:
      raise ValueError(f"config argument {item!r} is not key=value")
    key, value = item.split("=", 1)
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; valid: {', '.join(sorted(defaults))}")
    kind = type(defaults[key])
    out[key] = _boolean(key, value) if kind is bool else kind(value)
  return out


def apply_overrides(config, items, allow_new: bool = False) -> None:
  """The experiments' ``--set key.sub=value`` (repeatable): each value is a Python literal
  (``(16,)``, ``0.1``, ``True``) or else the string itself. The key must exist (a ConfigError
  naming it: a typo cannot start a run with the default), unless ``allow_new``: then a missing
  last part is added (a model's own option, read with ``config.get``, such as ``mlp_hidden`` on a
  CIFAR-shaped benchmark config)."""
  from gdw_jax.options import ConfigError  # pylint: disable=import-outside-toplevel
  for item in items or []:
    if "=" not in item:
      raise ConfigError(f"--set {item!r} is not key=value")
    key, text = item.split("=", 1)
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      if part not in node:
        raise ConfigError(f"--set {key}: no such config key")
      node = node[part]
    if leaf not in node and not allow_new:
      raise ConfigError(f"--set {key}: no such config key")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:  # ml_collections keeps a field's type
      raise ConfigError(f"--set {key}={text}: {' '.join(str(e).split())}") from None


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _boolean(key, value: str) -> bool:
  """``true/false/1/0/yes/no`` (any case); anything else (``ture``) is an error, not False."""
  v = value.strip().lower()
  if v not in _TRUE + _FALSE:
    raise ValueError(f"config argument {key}={value!r} is not a boolean; use one of "
                     f"{', '.join(_TRUE + _FALSE)}")
  return v in _TRUE


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with the GDW paper's recipe where one exists.

  Methods registered by plugins (``--config.plugins``) must be imported before this is called:
  the CLI imports them before it loads the config file.
  """
  c = ml_collections.ConfigDict()
  # What to run.
  c.method = "gdw"                 # see gdw_jax.methods.names(): erm, focal, cb, ldam_drw, l2rw,
                                   # mwnet, cmwnet, cmwnet_sl, gdw, absgd
  c.plugins = ""                   # modules that register more methods, e.g. "examples.my_method"
  c.dataset = "digits"
  c.model = "mlp"
  c.classifier_head = "auto"       # auto | linear | cosine (auto: cosine for LDAM, as LDAM-DRW)
  # Label noise / imbalance / meta set.
  c.noise_type = "uniform"         # none | uniform | uniform_other | flip | flip2 | sym_exact |
                                   # sym_other | asym (gdw_jax/data/noise.py, docs/cifar.md)
  c.noise_rate = 0.4
  c.asym_generator = "dividemix"   # asym draw: dividemix (whole-set count) | cmwnet (its 5->5
                                   # slip) | absgd (per-class count) | plc (per-sample prob.)
  c.class_map = ""                 # asym map "src:dst,..." (default: the dataset's built-in one)
  c.imbalance_factor = 1.0         # n_min / n_max in (0, 1]; 1 = balanced
  c.imbalance_type = "exp"         # exp | step
  c.meta_per_class = 10
  # Given noisy labels (a label file, human labels, a user's own data) are used as they are;
  # synthetic noise (noise_type / noise_rate) on top of them is refused unless this is True
  # (CMW-Net's hybrid noise: PMD labels + symmetric / asymmetric noise, as mwn.py does).
  c.noise_on_given_labels = False
  c.label_file = ""                # .npy of given noisy labels, one per pool image (digits, CIFAR)
  # Candidate sets (partial labels, gdw_jax/data/partial.py): partial_rate q in (0, 1) generates
  # them from the clean labels (official PRODEN partialize, seeded); 0 = none generated (an npz
  # `candidates` array or a label_csv candidates column gives them). With q > 0 the sets are the
  # labels: noise_type / noise_rate are not applied.
  c.partial_rate = 0.0
  c.partial_type = "binomial"      # binomial | pair
  # PRODEN -> CMW-Net (python -m gdw_jax.pll_pipeline, gdw_jax/pll_pipeline.py): stage A's PRODEN
  # epochs (the snapshot the pseudo-labels come from), its recipe ('' = this config's optimizer),
  # stage C's epochs (0 = num_epochs).
  c.pll = ml_collections.ConfigDict(dict(pseudo_label_epoch=40, stage_a_recipe="proden",
                                         stage_c_epochs=0))
  # Split randomness (gdw_jax/data/corruption.py): numpy (default) | legacy (replays the official
  # code's np.random / random calls, for its exact splits from the python archive). meta_seed -1:
  # meta and training sets from one split (disjoint); >= 0: the meta set is drawn with its own
  # seed, as the official scripts do (always 1), so it mostly lies in the training set too.
  c.split_rng = "numpy"
  c.meta_seed = -1
  # A user's own data (dataset=npz | folder | tfds; docs/own_data.md, gdw_jax/data/own.py).
  c.data_path = ""                 # npz: the .npz file (x_train, y_train, optional others)
  c.data_root = ""                 # folder: data_root/<class>/<image files>
  c.label_csv = ""                 # folder: path,label rows overriding the folder's labels
  c.meta_root = ""                 # folder: the trusted set, same layout
  c.test_root = ""                 # folder: the test set, same layout
  c.tfds_name = ""                 # tfds: any image-classification dataset (e.g. mnist)
  c.data_dir = ""                  # tfds data dir ("": tfds' ~/tensorflow_datasets)
  c.tfds_train_split = "train"
  c.tfds_test_split = "test"       # "": no test set
  c.tfds_meta_split = ""           # a trusted split (e.g. "train[:1000]"); "": none
  c.tfds_image_key = "image"
  c.tfds_label_key = "label"
  c.num_classes = 0                # 0: from the class names, else the largest label + 1
  # noisy: the labels are used as given (practitioner: the meta set is a trusted set); clean:
  # they are the truth (research: noise_type / imbalance / meta_per_class apply as for digits).
  c.given_labels = "noisy"
  c.trusted_ids = ""               # a file of training ids (one a line) whose labels are trusted
  c.meta_from_train = False        # no trusted set: draw the meta set from the given labels
  c.allow_missing_meta_classes = False  # a trusted set lacking a class: a warning, not an error
  c.skip_bad_images = False        # skip (and count) unreadable image files instead of failing
  # A reviewed corrections.csv (id,action,new_label; python -m experiments.review) applied to
  # the given training labels: relabel / remove; gdw_jax/data/corrections.py.
  c.label_corrections = ""
  c.image_size = 0                 # folder / tfds: resize to image_size^2 (0: as stored)
  c.image_channels = 0             # 0: as stored (all alike) | 1 | 3
  c.image_normalize = True         # per-channel mean / std of the training pool, on device
  c.image_crop_pad = 0             # random crop with this reflect padding (0: off)
  c.image_flip = False             # random horizontal flip (off: not for digits, X-rays, ...)
  c.image_mean = ()                # per-channel mean / std in [0, 1] units (uint8 / 255); empty:
  c.image_std = ()                 # the pool's own (memory), ImageNet's (stream)
  # Input pipeline (docs/real_noise.md). memory: every image decoded once into host memory,
  # augmented on device (image_crop_pad / image_flip). stream: grain decodes and augments each
  # batch in worker processes (data that do not fit in memory); host transforms of torchvision's
  # ImageNet recipes: Resize(image_resize, shorter side; 0: image_size^2) then a crop of
  # image_size (image_train_crop: random | center | random_resized), image_flip, colour jitter;
  # evaluation: Resize + CenterCrop.
  c.input_pipeline = "memory"
  c.image_resize = 0
  c.image_train_crop = "random"
  c.image_scale_min = 0.08         # random_resized: smallest area fraction
  c.image_color_jitter = 0.0       # brightness / contrast / saturation strength (0: off)
  c.stream_workers = 4             # grain worker processes (0: decode in the training process)
  c.stream_threads = 2             # threads per worker
  c.stream_prefetch = 2            # batches buffered per worker
  # List files of (path label) lines, paths relative to data_root (dataset=list and the
  # real-noise sources: clothing1m, animal10n, mini_webvision, webfg496; docs/real_noise.md).
  c.train_list = ""
  c.meta_list = ""
  c.test_list = ""
  c.webvision_classes = 50         # mini_webvision: the first classes of the Google list
  c.imagenet_val_root = ""         # mini_webvision: ILSVRC12 val folder with val.txt (extra test)
  # label_issues.csv (every run): the 'weight' score is the mean instance weight over the last
  # label_score_epochs epochs (gdw_jax/analysis/label_issues.py).
  c.label_score_epochs = 5
  # Optimisation (classifier): SGD momentum 0.9, coupled L2 5e-4, per-epoch cosine from 0.1.
  c.batch_size = 100
  c.meta_batch_size = 0            # 0: same as batch_size (capped at the meta set size)
  c.num_epochs = 80
  c.learning_rate = 0.1
  c.lr_schedule = "cosine_epoch"   # cosine_epoch | constant | step_epoch | cosine_restarts
  c.lr_milestones = ()             # step_epoch only
  c.lr_decay = 0.1
  c.lr_warmup_epochs = 0           # linear per-epoch warm-up lr*(e+1)/W for e < W (LDAM-DRW: 5)
  # cosine_restarts (PyTorch CosineAnnealingWarmRestarts stepped once per epoch with e - start,
  # CMW-Net mwn.py): constant lr before lr_restart_epoch, then cosine cycles of T_0, T_0 m, ...
  c.lr_restart_epoch = 0
  c.lr_restart_period = 5          # T_0 (epochs)
  c.lr_restart_mult = 2            # T_mult
  c.lr_min = 1e-4                  # eta_min
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 5e-4
  c.weight_decay_overrides = ""    # "pattern:wd,...": params whose path contains pattern (e.g.
                                   # "fc1:0.01", ABSGD's SCE-CNN) get that L2 instead
  c.grad_clip_norm = 0.0           # > 0: clip the gradient's global norm before L2 (ABSGD: 5)
  c.drop_last = False              # official loaders keep the last, smaller batch
  c.seed = 0
  # Several runs in one process and one compiled step, e.g. (0, 1, 2, 3, 4) or on the command
  # line --config.seeds=0,1,2,3,4: each run is the config with that seed, exactly as if alone,
  # written to <workdir>/seed_<s>/, plus <workdir>/summary.json (mean ± std); see docs/scaling.md.
  # Empty: one run with `seed`.
  c.seeds = ()
  c.dtype = "float32"              # float64 for step-parity checks
  c.compute_dtype = ""             # '' = dtype; bfloat16: mixed precision (float32 parameters,
                                   # bf16 convs; resnet50 / vgg19_bn), docs/real_noise.md
  c.init_from = ""                 # PyTorch state dict (.pth / .npz) to start the model from,
                                   # head re-initialised (resnet50 / vgg19_bn / resnet32)
  c.eval_batch_size = 1000
  # Faithful knobs of the official GDW code.
  c.prob_clamp = 0.999             # E = min(softmax, 0.999) - onehot (1.0: exact CE gradient)
  c.hypergrad = "autodiff"         # nested-grad reference
  c.bn_running_var = "unbiased"    # resnet32 BN running var from the unbiased batch var (PyTorch)
  # Base loss every method weights (docs/methods.md; keys and defaults: gdw_jax.losses.base_loss).
  # The loss baselines focal / cb / ldam_drw force name / class_weights / drw; the DRW epoch is
  # the CIFAR recipes' (160 of 200 epochs, see default_epoch_switches).
  c.loss = ml_collections.ConfigDict(losses.default_settings())
  # Every registered method's option groups (vnet, mwnet, gdw, cmwnet, cmwnet_sl, absgd, and
  # those of plugins), each with the defaults its method declares (gdw_jax/methods/*.py).
  for group in methods.option_groups():
    c[group.name] = ml_collections.ConfigDict(dict(group.defaults))
  # Logging.
  c.progress = True                # progress bar with steps/s and ETA
  c.report = True                  # write report.md + figures/ at the end (gdw_jax.analysis)
  c.tensorboard = False            # also write TensorBoard scalars (needs tensorboardX)
  # Input path: device keeps the training images on the device once and runs up to an epoch of
  # steps per call (batches gathered inside jit, lax loop); host gathers each step's batch on the
  # host (data that stream); auto: device when the images fit (docs/scaling.md). Same results.
  c.data_placement = "auto"        # auto | device | host
  c.steps_per_call = 0             # most steps per compiled call (0: up to an epoch, ~2 s/call)
  # Devices: the global batch is split over num_devices (0: all); see docs/scaling.md.
  c.num_devices = 0
  c.distributed = False            # multi-host: jax.distributed.initialize (auto-detected, or:)
  c.coordinator_address = ""       # "host:port" of process 0
  c.num_processes = 0
  c.process_id = -1
  # Checkpoints in <workdir>/checkpoints; rerunning the same --workdir resumes exactly.
  c.checkpoint = True
  c.checkpoint_every_steps = 500   # 0: only at the end (and at new best epochs)
  c.keep_checkpoints = 2           # the last k, plus the best test accuracy if checkpoint_best
  c.checkpoint_best = True
  # True: delete the workdir's checkpoints and start from scratch (one launch; a run whose
  # checkpoints cannot be restored stops with an error instead, docs/scaling.md).
  c.restart = False
  # One launch per workdir (docs/scaling.md): a launch holds <workdir>/.lease.json while it runs;
  # another launch into it stops (exit 2) unless the holder is gone: on this machine, its pid is
  # not running; on another, no heartbeat (every 30 s) for lease_stale_s seconds.
  # break_lease=True takes over any lease: only when its holder is surely gone (a launch, not a
  # requeue script).
  c.break_lease = False
  c.lease_stale_s = lease.STALE_SECONDS  # 300 s
  return c


def default_epoch_switches(c) -> None:
  """Stage switches of the official 200/300-epoch recipes (DRW at 160/200, and each method's
  declared ``OptionGroup.epoch_switches``: ABSGD's second stage at 160/200, CMW-Net-SL's warm-up
  at 10/300) at the same fraction of ``c.num_epochs``; call it after setting ``num_epochs``,
  before any recipe that sets a switch itself."""
  c.loss.drw_epoch = _at_fraction(c.num_epochs, 160, 200)
  for group in methods.option_groups():
    if group.name not in c:  # a method registered after this config was built
      continue
    for key, (epoch, total) in group.epoch_switches.items():
      c[group.name][key] = _at_fraction(c.num_epochs, epoch, total)


def _at_fraction(num_epochs: int, epoch: int, total: int) -> int:
  return max(1, round(num_epochs * epoch / total))
