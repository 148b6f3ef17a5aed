"""Weighting methods, looked up by name: ``get(name)(config, data_info) -> Method``."""
from typing import Callable, Dict

from gdw_jax.methods import erm, gdw, mwnet
from gdw_jax.methods.base import DataInfo, Method

_METHODS: Dict[str, Callable[..., Method]] = {
    "erm": erm.make,
    "mwnet": mwnet.make,
    "gdw": gdw.make,
}


def register(name: str, factory: Callable[..., Method]) -> None:
  _METHODS[name] = factory


def names():
  return tuple(sorted(_METHODS))


def get(name: str) -> Callable[..., Method]:
  if name not in _METHODS:
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(names())}")
  return _METHODS[name]


__all__ = ["DataInfo", "Method", "get", "names", "register"]
