"""Config validation in one place, before any work starts (nothing is written on error)."""
from __future__ import annotations

import numbers

from gdw_jax import bilevel, data, methods, models, optim


class ConfigError(ValueError):
  """A user mistake in the config: reported as one line, without a traceback."""


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def _one_of(config, key, valid) -> None:
  value = config.get(key)
  _check(value in valid, f"unknown {key} {value!r}; valid: {', '.join(map(str, valid))}")


def _number(config, key, lo=None, hi=None, lo_open=False, integer=False) -> None:
  value = config.get(key)
  kind = numbers.Integral if integer else numbers.Real
  _check(isinstance(value, kind) and not isinstance(value, bool),
         f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
  if lo is not None:
    ok = value > lo if lo_open else value >= lo
    _check(ok, f"{key} must be {'>' if lo_open else '>='} {lo}, got {value}")
  if hi is not None:
    _check(value <= hi, f"{key} must be <= {hi}, got {value}")


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
  _one_of(config, "bn_running_var", models.resnet_cifar.BN_RUNNING_VAR)
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
  if config.method in ("mwnet", "gdw"):
    _check(config.meta_per_class >= 1,
           f"method {config.method} needs a meta set: meta_per_class must be >= 1")
    _one_of(config.vnet, "optimizer", optim.OPTIMIZERS)
    _number(config.vnet, "lr", 0.0)
    _number(config.vnet, "hidden", 1, integer=True)
  if config.method == "mwnet":
    _check(config.mwnet.real_weights in ("updated", "initial"),
           f"unknown mwnet.real_weights {config.mwnet.real_weights!r}; valid: updated, initial")
  if config.method == "gdw":
    _check(config.prob_clamp < 1.0, "gdw needs prob_clamp < 1 (the constraint divides by 1 - p_y)")
    _number(config.gdw, "outer_lr", 0.0)
    _number(config.gdw, "clip", 0.0, lo_open=True)
    _check(0 < config.gdw.weight_min <= config.gdw.weight_max,
           "gdw.weight_min must be > 0 and <= gdw.weight_max")
