"""Weighting methods, looked up by name: ``get(name)(config, data_info) -> Method``."""
from typing import Callable, Dict

from gdw_jax.methods import absgd, cmwnet, cmwnet_sl, erm, gdw, l2rw, mwnet
from gdw_jax.methods.base import DataInfo, EpochContext, Method

_METHODS: Dict[str, Callable[..., Method]] = {
    "erm": erm.make,
    "focal": erm.baseline("focal"),
    "cb": erm.baseline("cb"),
    "ldam_drw": erm.baseline("ldam_drw"),
    "l2rw": l2rw.make,
    "mwnet": mwnet.make,
    "cmwnet": cmwnet.make,
    "cmwnet_sl": cmwnet_sl.make,
    "gdw": gdw.make,
    "absgd": absgd.make,
}


def register(name: str, factory: Callable[..., Method]) -> None:
  _METHODS[name] = factory


def names():
  return tuple(sorted(_METHODS))


def get(name: str) -> Callable[..., Method]:
  if name not in _METHODS:
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(names())}")
  return _METHODS[name]


__all__ = ["DataInfo", "EpochContext", "Method", "get", "names", "register"]
