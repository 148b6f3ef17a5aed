"""Config validation in one place, before any work starts (nothing is written on error)."""
from __future__ import annotations

import numbers
import os

from gdw_jax import bilevel, data, losses, methods, models, optim
from gdw_jax.methods.cmwnet import FAMILY_ORDERS, META_SOURCES
from gdw_jax.methods.cmwnet_sl import SECOND_WEIGHTS
from gdw_jax.methods.weight_net import NORMALISE


class ConfigError(ValueError):
  """A user mistake in the config: reported as one line, without a traceback."""


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def _one_of(config, key, valid, prefix="") -> None:
  value = config.get(key)
  _check(value in valid,
         f"unknown {prefix}{key} {value!r}; valid: {', '.join(map(str, valid))}")


def _flag(config, key, prefix="") -> None:
  value = config.get(key)
  _check(isinstance(value, bool), f"{prefix}{key} must be True or False, got {value!r}")


def _number(config, key, lo=None, hi=None, lo_open=False, integer=False, prefix="",
            hi_open=False) -> None:
  value = config.get(key)
  key = prefix + key
  kind = numbers.Integral if integer else numbers.Real
  _check(isinstance(value, kind) and not isinstance(value, bool),
         f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
  if lo is not None:
    ok = value > lo if lo_open else value >= lo
    _check(ok, f"{key} must be {'>' if lo_open else '>='} {lo}, got {value}")
  if hi is not None:
    ok = value < hi if hi_open else value <= hi
    _check(ok, f"{key} must be {'<' if hi_open else '<='} {hi}, got {value}")


def validate(config) -> None:
  """Raise :class:`ConfigError` on the first inconsistency in ``config``."""
  _one_of(config, "method", methods.names())
  _one_of(config, "dataset", data.dataset_names())
  _one_of(config, "model", models.names())
  _one_of(config, "noise_type", data.NOISE_TYPES)
  _one_of(config, "imbalance_type", data.IMBALANCE_TYPES)
  _one_of(config, "lr_schedule", optim.LR_SCHEDULES)
  _one_of(config, "hypergrad", bilevel.HYPERGRADS)
  _one_of(config, "dtype", ("float32", "float64"))
  _number(config, "noise_rate", 0.0, 1.0)
  _check(0.0 < config.imbalance_factor <= 1.0,
         f"imbalance_factor must be in (0, 1], got {config.imbalance_factor}")
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
  _one_of(config, "classifier_head", models.HEADS)
  _number(config, "lr_warmup_epochs", 0, integer=True)
  _validate_loss(config)
  needs_net = config.method in ("mwnet", "gdw")
  needs_meta = config.method in ("mwnet", "gdw", "l2rw")
  if config.method in ("cmwnet", "cmwnet_sl"):
    group = _validate_cmwnet(config)
    frozen = bool(config.cmwnet.transfer)
    needs_net = not frozen
    needs_meta = not frozen and group.meta_source == "clean"
  if needs_meta:
    _check(config.meta_per_class >= 1,
           f"method {config.method} needs a meta set: meta_per_class must be >= 1")
  if needs_net:
    _one_of(config.vnet, "optimizer", optim.OPTIMIZERS, "vnet.")
    _number(config.vnet, "lr", 0.0, prefix="vnet.")
    _number(config.vnet, "weight_decay", 0.0, prefix="vnet.")
    _number(config.vnet, "hidden", 1, integer=True, prefix="vnet.")
  if config.method == "mwnet":
    _check(config.mwnet.real_weights in ("updated", "initial"),
           f"unknown mwnet.real_weights {config.mwnet.real_weights!r}; valid: updated, initial")
    _one_of(config.mwnet, "normalise", NORMALISE, "mwnet.")
    _flag(config.mwnet, "live_input", "mwnet.")
  if config.method == "absgd":
    _validate_absgd(config)
  if config.method == "gdw":
    _check(config.prob_clamp < 1.0, "gdw needs prob_clamp < 1 (the constraint divides by 1 - p_y)")
    _number(config.gdw, "outer_lr", 0.0)
    _number(config.gdw, "clip", 0.0, lo_open=True)
    _check(0 < config.gdw.weight_min <= config.gdw.weight_max,
           "gdw.weight_min must be > 0 and <= gdw.weight_max")


def _epoch_switch(config, key, value) -> None:
  _check(value < config.num_epochs,
         f"{key} = {value} is not before the last epoch (num_epochs = {config.num_epochs}): "
         "that stage would never run")


def _validate_loss(config) -> None:
  """``config.loss`` as the method sees it (the loss baselines force some of its keys)."""
  s = losses.loss_settings(config)
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
  if s["drw"]:
    _check(s["class_weights"] != "none", "loss.drw defers class weights: set loss.class_weights")
    _epoch_switch(config, "loss.drw_epoch", s["drw_epoch"])


def _validate_cmwnet(config):
  """Checks shared by cmwnet and cmwnet_sl; returns the group with the schedule keys."""
  c = config.cmwnet
  p = "cmwnet."
  _number(c, "num_families", 1, integer=True, prefix=p)
  _one_of(c, "family_order", FAMILY_ORDERS, p)
  _number(c, "kmeans_seed", 0, integer=True, prefix=p)
  _one_of(c, "normalise", NORMALISE, p)
  fams = tuple(c.families or ())
  _check(all(isinstance(f, numbers.Integral) and 0 <= f for f in fams),
         f"cmwnet.families must be non-negative integers, got {fams}")
  _check(isinstance(c.transfer, str), f"cmwnet.transfer must be a path, got {c.transfer!r}")
  if c.transfer:
    _check(c.transfer.endswith((".npz", ".pth", ".pt")),
           f"cmwnet.transfer {c.transfer!r}: expected a .npz export or a .pth checkpoint")
    _check(os.path.isfile(c.transfer), f"cmwnet.transfer file {c.transfer!r} does not exist")
  elif fams:
    _check(max(fams) < c.num_families, f"cmwnet.families uses family {max(fams)} but "
           f"num_families is {c.num_families}")
  g = config.cmwnet if config.method == "cmwnet" else config.cmwnet_sl
  p = f"{config.method}."
  _number(g, "warmup_epochs", 0, integer=True, prefix=p)
  _epoch_switch(config, p + "warmup_epochs", g.warmup_epochs)
  _number(g, "meta_every", 1, integer=True, prefix=p)
  _one_of(g, "meta_source", META_SOURCES, p)
  _number(g, "select_per_class", 0, integer=True, prefix=p)
  if config.method == "cmwnet_sl":
    _number(g, "ema_decay", 0.0, 1.0, prefix=p)
    _number(g, "ema_freeze_epoch", 0, integer=True, prefix=p)
    _number(g, "mixup_alpha", 0.0, lo_open=True, prefix=p)
    _flag(g, "meta_mixup", p)
    _number(g, "meta_mixup_alpha", 0.0, lo_open=True, prefix=p)
    _number(g, "pseudo_momentum", 0.0, 1.0, hi_open=True, prefix=p)
    _one_of(g, "second_weight", SECOND_WEIGHTS, p)
  return g


def _validate_absgd(config) -> None:
  a = config.absgd
  p = "absgd."
  for key in ("lam", "init_lam"):
    _number(a, key, prefix=p)
    _check(a[key] != 0, f"absgd.{key} must be non-zero (> 0 imbalance, < 0 noise)")
  _number(a, "start_epoch", 0, integer=True, prefix=p)
  _epoch_switch(config, "absgd.start_epoch", a.start_epoch)
  _number(a, "gamma", 0.0, 1.0, lo_open=True, prefix=p)
  _number(a, "ab_alpha", 0.0, lo_open=True, prefix=p)
  _flag(a, "uniform_floor", p)
