"""Shared defaults and the ``file.py:key=value,...`` config-argument parser."""
import ml_collections

from gdw_jax import losses, methods


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
  c.noise_type = "uniform"         # none | uniform | flip | flip2
  c.noise_rate = 0.4
  c.imbalance_factor = 1.0         # n_min / n_max in (0, 1]; 1 = balanced
  c.imbalance_type = "exp"         # exp | step
  c.meta_per_class = 10
  # Given noisy labels (a label file, human labels, a user's own data) are used as they are;
  # synthetic noise (noise_type / noise_rate) on top of them is refused unless this is True
  # (CMW-Net's hybrid noise: PMD labels + symmetric / asymmetric noise, as mwn.py does).
  c.noise_on_given_labels = False
  # Split randomness (gdw_jax/data/corruption.py): numpy (default) | legacy (replays the official
  # code's np.random / random calls, for its exact splits from the python archive). meta_seed -1:
  # meta and training sets from one split (disjoint); >= 0: the meta set is drawn with its own
  # seed, as the official scripts do (always 1), so it mostly lies in the training set too.
  c.split_rng = "numpy"
  c.meta_seed = -1
  # Optimisation (classifier): SGD momentum 0.9, coupled L2 5e-4, per-epoch cosine from 0.1.
  c.batch_size = 100
  c.meta_batch_size = 0            # 0: same as batch_size (capped at the meta set size)
  c.num_epochs = 80
  c.learning_rate = 0.1
  c.lr_schedule = "cosine_epoch"   # cosine_epoch | constant | step_epoch
  c.lr_milestones = ()             # step_epoch only
  c.lr_decay = 0.1
  c.lr_warmup_epochs = 0           # linear per-epoch warm-up lr*(e+1)/W for e < W (LDAM-DRW: 5)
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 5e-4
  c.drop_last = False              # official loaders keep the last, smaller batch
  c.seed = 0
  c.dtype = "float32"              # float64 for step-parity checks
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
