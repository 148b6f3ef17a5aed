"""Weighting methods, looked up by name: ``get(name)(config, data_info) -> Method``.

Each method module declares a :class:`MethodSpec` (``SPEC``); this registry holds them. A method
defined outside the package registers itself the same way when its module is imported::

    gdw_jax.methods.register(MethodSpec("my_method", build=from_config, groups=(OPTIONS,)))

Two ways to have the trainer import such a module before the config is read and validated:
``--config.plugins=my_package.my_method`` (comma-separated module names, see :func:`load_plugins`)
or a Python entry point in the group ``gdw_jax.methods`` of an installed package (the entry point
names the module, or its ``MethodSpec``; see :func:`load_entry_points`).
"""
from __future__ import annotations

import importlib
import logging
from importlib import metadata
from typing import Dict, Iterable, Tuple, Union

from gdw_jax import losses
from gdw_jax.methods import absgd, cmwnet, cmwnet_sl, erm, gdw, l2rw, mwnet, proden
from gdw_jax.methods.base import DataInfo, EpochContext, Method, MethodSpec
from gdw_jax.options import OptionGroup

ENTRY_POINT_GROUP = "gdw_jax.methods"

_SPECS: Dict[str, MethodSpec] = {}
_entry_points_loaded = False


def register(spec: MethodSpec) -> MethodSpec:
  """Make ``spec.name`` a valid ``config.method``. Re-registering a name replaces it (a module
  imported twice, e.g. as a plugin and by the user). Returns ``spec``."""
  if not isinstance(spec, MethodSpec):
    raise TypeError(f"register() takes a gdw_jax.methods.MethodSpec, got {type(spec).__name__}")
  for group in spec.groups:
    if not isinstance(group, OptionGroup):
      raise TypeError(f"method {spec.name}: groups must be OptionGroup, got {group!r}")
    for other in _SPECS.values():
      for known in other.groups:
        if known.name == group.name and known.defaults != group.defaults:
          raise ValueError(f"method {spec.name} declares config group {group.name!r} with "
                           f"other defaults than method {other.name}")
  _SPECS[spec.name] = spec
  return spec


for _module in (erm, l2rw, mwnet, cmwnet, cmwnet_sl, gdw, absgd, proden):
  for _spec in _module.SPECS:
    register(_spec)


def load_entry_points() -> None:
  """Import the methods of installed packages (entry point group ``gdw_jax.methods``), once.

  An entry point names a module that registers its methods on import (``my_method =
  my_package.my_method``) or a ``MethodSpec`` object (``my_package.my_method:SPEC``). One that
  fails to load is logged and skipped, so a broken package cannot stop every run.
  """
  global _entry_points_loaded
  if _entry_points_loaded:
    return
  _entry_points_loaded = True
  for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
    try:
      obj = ep.load()
    except Exception as e:  # noqa: BLE001 -- a third-party import error of any kind
      logging.warning("gdw_jax: skipping method entry point %s (%s: %s)", ep.value,
                      type(e).__name__, e)
      continue
    if isinstance(obj, MethodSpec):
      register(obj)


def plugin_modules(plugins: Union[str, Iterable[str]]) -> Tuple[str, ...]:
  """``"a.b,c"`` (or a sequence of names) -> ``("a.b", "c")``."""
  if isinstance(plugins, str):
    plugins = plugins.split(",")
  return tuple(p.strip() for p in plugins if p and p.strip())


def load_plugins(plugins: Union[str, Iterable[str]]) -> None:
  """Import the modules named in ``plugins`` (``config.plugins``: comma-separated module names,
  importable from the working directory or the installed packages); each registers its methods
  when imported. Raises ValueError naming a module that cannot be imported."""
  for name in plugin_modules(plugins):
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise ValueError(f"plugins: cannot import module {name!r} ({e})") from None


def names() -> Tuple[str, ...]:
  load_entry_points()
  return tuple(sorted(_SPECS))


def spec(name: str) -> MethodSpec:
  """The declaration of method ``name``; ValueError (with the valid names) if unknown."""
  load_entry_points()
  if name not in _SPECS:
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(names())}")
  return _SPECS[name]


def get(name: str):
  """``build(config, info, dtype=None) -> Method`` of method ``name``."""
  return spec(name).build


def specs() -> Tuple[MethodSpec, ...]:
  """Every registered method's declaration, in registration order."""
  load_entry_points()
  return tuple(_SPECS.values())


def option_groups() -> Tuple[OptionGroup, ...]:
  """The config groups of all registered methods, each once, in registration order."""
  out: Dict[str, OptionGroup] = {}
  for s in specs():
    for group in s.groups:
      out.setdefault(group.name, group)
  return tuple(out.values())


def loss_overrides(name: str) -> dict:
  """The ``config.loss`` settings method ``name`` implies ({} for an unknown name: validation
  reports that one)."""
  load_entry_points()
  s = _SPECS.get(name)
  return dict(s.loss_overrides) if s is not None else {}


def loss_settings(config) -> dict:
  """``config.loss`` as the run's method sees it: with the settings its name implies
  (``ldam_drw`` forces ``name=ldam``, ``cb`` ``class_weights=cb``; each method declares them in
  its own file, ``MethodSpec.loss_overrides``)."""
  return losses.loss_settings(config, loss_overrides(config["method"]))


def with_loss_overrides(config):
  """``config``, or a copy whose ``loss`` group carries the settings its method implies
  (:func:`loss_settings`): what the run's model is built from, so that ``classifier_head='auto'``
  sees the loss the method trains with (LDAM-DRW's cosine head:
  :func:`gdw_jax.models.head_kind`)."""
  overrides = loss_overrides(config["method"])
  if not overrides:
    return config
  config = config.copy_and_resolve_references()
  config.loss.update(overrides)
  return config


__all__ = ["DataInfo", "EpochContext", "Method", "MethodSpec", "OptionGroup", "get", "names",
           "register", "spec", "specs", "option_groups", "load_plugins", "load_entry_points",
           "loss_overrides", "loss_settings", "with_loss_overrides"]
