"""Config option groups and the checks that validate them, shared by the trainer and methods.

A method declares the config groups it reads as :class:`OptionGroup` s (``config.gdw``,
``config.vnet``, ...): each group's keys with their defaults, written once (most are taken from
the method constructor's keyword defaults with :func:`defaults_of`), and a function that checks a
config's values. ``configs.common.base_config()`` assembles the groups of every registered method,
and :func:`gdw_jax.validation.validate` runs the checks of the chosen method's groups, so neither
names a method.

Checks raise :class:`ConfigError` with a one-line message naming the key (``gdw.clip must be >
0.0, got 0.0``); the CLI prints it and exits 2 before anything is written. This module imports
nothing from the rest of the package, so every method module can use it.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple


class ConfigError(ValueError):
  """A user mistake in the config: reported as one line, without a traceback."""


class OptionGroup(NamedTuple):
  """``config.<name>``: its keys with their defaults, and ``validate(config)`` (raises
  :class:`ConfigError`; it may read other keys, e.g. ``num_epochs`` for an epoch switch).

  ``epoch_switches`` maps a key holding an epoch number to ``(epoch, total)`` of the official
  recipe: :func:`configs.common.default_epoch_switches` sets it to the same fraction of
  ``num_epochs`` (e.g. ABSGD's second stage at 160 of 200 epochs).
  """
  name: str
  defaults: Dict[str, Any]
  validate: Optional[Callable[[Any], None]] = None
  epoch_switches: Dict[str, Tuple[int, int]] = {}


def defaults_of(fn: Callable, *keys: str) -> Dict[str, Any]:
  """``{key: default}`` of keyword parameters of ``fn``: a method constructor's signature is
  where its options' defaults are written; the config group takes them from there."""
  params = inspect.signature(fn).parameters
  missing = [k for k in keys if k not in params or params[k].default is inspect.Parameter.empty]
  if missing:
    raise TypeError(f"{fn.__name__} has no keyword default for {', '.join(missing)}")
  return {k: params[k].default for k in keys}


def values(group, declared: OptionGroup) -> Dict[str, Any]:
  """The declared keys of a config group (e.g. ``config.gdw``), read directly: a config built by
  hand without one of them fails here with a KeyError naming it, instead of using a default."""
  return {k: group[k] for k in declared.defaults}


# ------------------------------------------------------------------------------------ checks


def check(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def present(config, key, prefix="") -> None:
  check(key in config, f"config has no key {prefix + key!r} (build configs from "
                       f"configs.common.base_config())")


def group_present(config, declared: OptionGroup) -> None:
  """``config.<name>`` exists and has every declared key."""
  present(config, declared.name)
  for key in declared.defaults:
    present(config[declared.name], key, declared.name + ".")


def one_of(config, key, valid, prefix="") -> None:
  present(config, key, prefix)
  value = config[key]
  check(value in valid, f"unknown {prefix}{key} {value!r}; valid: {', '.join(map(str, valid))}")


def flag(config, key, prefix="") -> None:
  present(config, key, prefix)
  value = config[key]
  check(isinstance(value, bool), f"{prefix}{key} must be True or False, got {value!r}")


def number(config, key, lo=None, hi=None, lo_open=False, hi_open=False, integer=False,
           prefix="") -> None:
  """``config[key]`` is a number (an integer with ``integer``) in the given interval."""
  present(config, key, prefix)
  value = config[key]
  kind = numbers.Integral if integer else numbers.Real
  check(isinstance(value, kind) and not isinstance(value, bool),
        f"{prefix}{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
  lo_ok = lo is None or (value > lo if lo_open else value >= lo)
  hi_ok = hi is None or (value < hi if hi_open else value <= hi)
  if lo is not None and hi is not None:  # say the whole interval: "must be in (0, 1]"
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    check(lo_ok and hi_ok, f"{prefix}{key} must be in {interval}, got {value}")
  check(lo_ok, f"{prefix}{key} must be {'>' if lo_open else '>='} {lo}, got {value}")
  check(hi_ok, f"{prefix}{key} must be {'<' if hi_open else '<='} {hi}, got {value}")


def before_last_epoch(config, key, value) -> None:
  """An epoch switch ``key = value`` must happen before the run ends."""
  check(value < config.num_epochs,
        f"{key} = {value} is not before the last epoch (num_epochs = {config.num_epochs}): "
        "that stage would never run")
