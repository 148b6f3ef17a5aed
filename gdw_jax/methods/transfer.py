"""Weighting nets in and out: PyTorch-named state dicts <-> our Flax parameters, and files.

A weighting net travels as a flat ``{PyTorch name: array}`` dict, with PyTorch layouts (linear
weights ``[out, in]``), so the official checkpoints and our own exports share one format:

* CMW-Net (official ``ACVNet`` / ``VNet(1, 100, 100, 1, 3)``): ``feature.layer.0.{weight
  [h, 1], bias [h]}`` (the shared trunk) and ``classfier.layers.{k}.0.{weight [1, h], bias [1]}``
  (head ``k``; "classfier" sic).
* MW-Net's VNet: ``linear1.{weight [h, 1], bias [h]}``, ``linear2.{weight [1, h], bias [1]}``.

Files: ``.npz`` (what :func:`save` writes) or ``.pth`` (a torch zip checkpoint, read with the
torch-free ``gdw_jax.interop.load_torch_state_dict``).

Export the weighting net of a finished run (its ``method_state.msgpack``) with::

    python -m gdw_jax.methods.transfer runs/cmwnet/method_state.msgpack cmwnet_net.npz
"""
from __future__ import annotations

import os
import re
import sys
from typing import Dict

import flax.serialization
import numpy as np

from gdw_jax import fileio, interop

_HEAD = re.compile(r"^classfier\.layers\.(\d+)\.0\.(weight|bias)$")


def cmwnet_from_torch(state_dict: Dict[str, np.ndarray]):
  """Flax parameters of :class:`gdw_jax.models.weight_nets.CMWNet` from a PyTorch state dict."""
  sd = {k: np.asarray(v) for k, v in state_dict.items()}
  for key in ("feature.layer.0.weight", "feature.layer.0.bias"):
    if key not in sd:
      raise ValueError(f"not a CMW-Net weighting net: missing {key!r} (keys: {sorted(sd)})")
  heads = sorted({int(m.group(1)) for m in map(_HEAD.match, sd) if m})
  if not heads or heads != list(range(len(heads))):
    raise ValueError(f"CMW-Net heads must be classfier.layers.0..K-1, got {heads}")
  w1, b1 = sd["feature.layer.0.weight"], sd["feature.layer.0.bias"]
  if w1.ndim != 2 or w1.shape[1] != 1 or b1.shape != (w1.shape[0],):
    raise ValueError(f"trunk must be Linear(1, h): weight {w1.shape}, bias {b1.shape}")
  hidden = w1.shape[0]
  kernel = np.stack([sd[f"classfier.layers.{k}.0.weight"].reshape(hidden) for k in heads])
  bias = np.stack([sd[f"classfier.layers.{k}.0.bias"].reshape(()) for k in heads])
  return {"trunk": {"kernel": w1.T.copy(), "bias": b1.copy()},
          "heads_kernel": kernel, "heads_bias": bias}


def cmwnet_to_torch(params) -> Dict[str, np.ndarray]:
  """The inverse of :func:`cmwnet_from_torch`."""
  kernel = np.asarray(params["heads_kernel"])
  bias = np.asarray(params["heads_bias"])
  out = {"feature.layer.0.weight": np.asarray(params["trunk"]["kernel"]).T.copy(),
         "feature.layer.0.bias": np.asarray(params["trunk"]["bias"]).copy()}
  for k in range(kernel.shape[0]):
    out[f"classfier.layers.{k}.0.weight"] = kernel[k][None, :].copy()
    out[f"classfier.layers.{k}.0.bias"] = bias[k].reshape(1).copy()
  return out


def vnet_from_torch(state_dict: Dict[str, np.ndarray]):
  """Flax parameters of MW-Net's :class:`gdw_jax.models.weight_nets.VNet`."""
  sd = {k: np.asarray(v) for k, v in state_dict.items()}
  try:
    return {name: {"kernel": sd[f"{name}.weight"].T.copy(), "bias": sd[f"{name}.bias"].copy()}
            for name in ("linear1", "linear2")}
  except KeyError as e:
    raise ValueError(f"not a VNet: missing {e.args[0]!r} (keys: {sorted(sd)})") from None


def vnet_to_torch(params) -> Dict[str, np.ndarray]:
  return {f"{name}.{k}": (np.asarray(params[name]["kernel"]).T.copy() if k == "weight"
                          else np.asarray(params[name]["bias"]).copy())
          for name in ("linear1", "linear2") for k in ("weight", "bias")}


def to_torch(params) -> Dict[str, np.ndarray]:
  """Either net's parameters as a PyTorch-named dict (the kind is read from the names)."""
  return cmwnet_to_torch(params) if "heads_kernel" in params else vnet_to_torch(params)


def load(path: str) -> Dict[str, np.ndarray]:
  """``{PyTorch name: array}`` from a ``.npz`` export or a ``.pth`` torch checkpoint."""
  if not os.path.isfile(path):
    raise ValueError(f"weighting-net file {path!r} does not exist")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  if path.endswith((".pth", ".pt")):
    return {k: np.asarray(v) for k, v in interop.load_torch_state_dict(path).items()}
  raise ValueError(f"weighting-net file {path!r}: expected .npz or .pth")


def save(path: str, params) -> None:
  """Write a net's parameters as a PyTorch-named ``.npz`` (loadable by :func:`load`)."""
  path = path if path.endswith(".npz") else path + ".npz"  # as np.savez names it
  fileio.save_npz(path, **to_torch(params))


def net_params_from_state(method_state) -> dict:
  """The weighting net's parameters inside a method state (MW-Net / GDW / CMW-Net / -SL)."""
  if "net" in method_state:
    method_state = method_state["net"]
  if "params" not in method_state:
    raise ValueError("this method state holds no weighting net")
  return method_state["params"]


def export_run(method_state_path: str, out_path: str) -> None:
  """Export the weighting net of a saved ``method_state.msgpack`` to a ``.npz``."""
  with open(method_state_path, "rb") as f:
    state = flax.serialization.msgpack_restore(f.read())
  save(out_path, net_params_from_state(state))


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit("usage: python -m gdw_jax.methods.transfer METHOD_STATE.msgpack OUT.npz")
  export_run(sys.argv[1], sys.argv[2])
  print(f"wrote {sys.argv[2]}")
