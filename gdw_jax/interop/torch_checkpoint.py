"""Read ``torch.save`` checkpoints into NumPy without PyTorch, safely.

A PyTorch (>= 1.6) checkpoint is a zip archive ``<dir>/data.pkl`` + ``<dir>/data/<key>`` (raw
storage bytes) + ``<dir>/byteorder``. The pickle rebuilds each tensor as
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``, where ``storage`` is a
persistent id ``('storage', torch.FloatStorage, key, location, numel)``.

Unpickling runs whatever callables a pickle names, so a checkpoint from the internet is code.
:class:`_RestrictedUnpickler` resolves *only* the names a genuine state dict needs -- the tensor
rebuild functions, storage types, dtypes and ``collections.OrderedDict`` -- and maps each to a
NumPy implementation here; any other global (``os.system``, ``builtins.eval``, ...) raises
:class:`UnsafeCheckpointError` before anything is called. Strides and offsets are bounds-checked
against the storage before any view is made.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, Dict, Optional

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = {
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16,
    "short": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
}


class CheckpointError(ValueError):
  """The file is not a checkpoint this reader understands (one-line message)."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
  """The pickle asks for something a tensor state dict never needs; nothing was executed."""


class _StorageType(tuple):
  """Stands in for ``torch.FloatStorage`` & co.: just the element dtype (immutable, no state)."""
  __slots__ = ()

  @property
  def dtype(self):
    return self[0]


class _Storage(tuple):
  """A loaded storage: ``(1-D array of its elements,)``; immutable."""
  __slots__ = ()

  @property
  def array(self):
    return self[0]


class _TorchDtype(tuple):
  __slots__ = ()


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _rebuild_tensor(storage, offset, size, stride, dtype=None) -> np.ndarray:
  if not isinstance(storage, _Storage):
    raise CheckpointError("malformed checkpoint: tensor without a storage")
  if not (_is_int(offset) and isinstance(size, tuple) and isinstance(stride, tuple)
          and len(size) == len(stride) and all(_is_int(v) and v >= 0 for v in size + stride)
          and offset >= 0):
    raise CheckpointError(f"malformed checkpoint: bad tensor geometry offset={offset!r} "
                          f"size={size!r} stride={stride!r}")
  data = storage.array
  if dtype is not None:  # _rebuild_tensor_v3: an untyped (byte) storage viewed as `dtype`
    if data.dtype != np.uint8 or data.size % np.dtype(dtype).itemsize:
      raise CheckpointError("malformed checkpoint: storage does not match the tensor dtype")
    data = data.view(dtype)
  if 0 in size:
    return np.zeros(size, data.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size:
    raise CheckpointError(f"malformed checkpoint: tensor reaches element {last} of a storage "
                          f"of {data.size}")
  view = np.lib.stride_tricks.as_strided(
      data[offset:], shape=size, strides=tuple(s * data.itemsize for s in stride),
      writeable=False)
  return np.array(view)  # own, contiguous copy


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks
  if metadata:
    raise CheckpointError(f"unsupported tensor metadata {metadata!r} (conj/neg bits)")
  return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
  del requires_grad, backward_hooks
  if metadata:
    raise CheckpointError(f"unsupported tensor metadata {metadata!r} (conj/neg bits)")
  if not isinstance(dtype, _TorchDtype):
    raise CheckpointError("malformed checkpoint: tensor dtype is not a torch dtype")
  return _rebuild_tensor(storage, offset, size, stride, dtype=dtype[0])


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
  del requires_grad, backward_hooks, state
  if not isinstance(data, np.ndarray):
    raise CheckpointError("malformed checkpoint: parameter without tensor data")
  return data


_REBUILD = {
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals of a tensor state dict, each to a NumPy implementation above."""

  def __init__(self, file, read_record, byteorder: str):
    super().__init__(file)
    self._read_record = read_record
    self._byteorder = byteorder
    self._storages: Dict[str, _Storage] = {}

  def find_class(self, module, name):
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "torch._utils" and name in _REBUILD:
      return _REBUILD[name]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType((_STORAGE_DTYPES[name],))
    if module == "torch" and name in _TORCH_DTYPES:
      return _TorchDtype((_TORCH_DTYPES[name],))
    raise UnsafeCheckpointError(
        f"refusing to load global '{module}.{name}': a tensor checkpoint only needs tensor "
        f"rebuild functions, storage types and OrderedDict (the file may be malicious)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
      raise CheckpointError(f"malformed checkpoint: unknown persistent id {pid!r:.80}")
    _, storage_type, key, _location, numel = pid
    if not isinstance(storage_type, _StorageType) or not _is_int(numel) or numel < 0:
      raise CheckpointError(f"malformed checkpoint: bad storage reference {pid!r:.80}")
    key = key.decode("ascii") if isinstance(key, bytes) else key
    if not isinstance(key, str) or not key or "/" in key or ".." in key:
      raise CheckpointError(f"malformed checkpoint: bad storage key {key!r:.80}")
    if key not in self._storages:
      dtype = np.dtype(storage_type.dtype).newbyteorder("<" if self._byteorder == "little"
                                                        else ">")
      raw = self._read_record(f"data/{key}")
      if len(raw) < numel * dtype.itemsize:
        raise CheckpointError(f"malformed checkpoint: storage {key} holds {len(raw)} bytes, "
                              f"needs {numel * dtype.itemsize}")
      array = np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder("="))
      self._storages[key] = _Storage((array,))
    return self._storages[key]


def _load_torch_zip(path: str, zf: zipfile.ZipFile) -> Any:
  pickles = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
  if len(pickles) != 1:
    raise CheckpointError(f"{path}: not a torch.save archive (expected one <dir>/data.pkl, "
                          f"found {len(pickles)})")
  prefix = pickles[0][:-len("data.pkl")]
  names = set(zf.namelist())

  def read_record(name):
    if prefix + name not in names:
      raise CheckpointError(f"{path}: malformed checkpoint: record {name} is missing")
    return zf.read(prefix + name)

  byteorder = "little"
  if prefix + "byteorder" in names:
    byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
      raise CheckpointError(f"{path}: unknown byteorder {byteorder!r}")
  unpickler = _RestrictedUnpickler(io.BytesIO(read_record("data.pkl")), read_record, byteorder)
  try:
    return unpickler.load()
  except CheckpointError as e:
    raise type(e)(f"{path}: {e}") from None
  except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
          IndexError, KeyError) as e:
    raise CheckpointError(f"{path}: malformed checkpoint pickle: {e}") from None


def _select(obj: Any, key: Optional[str], path: str) -> Dict[str, np.ndarray]:
  if key is not None:
    if not isinstance(obj, dict) or key not in obj:
      raise CheckpointError(f"{path}: no entry {key!r} at the top level of the checkpoint")
    obj = obj[key]
  if not isinstance(obj, dict):
    raise CheckpointError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state dict")
  bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
  if bad:
    nested = [k for k in obj if isinstance(obj[k], dict)]
    hint = f"; pass key= one of {nested}" if nested else ""
    raise CheckpointError(f"{path}: not a flat {{name: tensor}} state dict (e.g. entry "
                          f"{bad[0]!r:.60}){hint}")
  return dict(obj)


def load_torch_state_dict(path: str, key: Optional[str] = None) -> Dict[str, np.ndarray]:
  """``{name: np.ndarray}`` from a ``torch.save`` zip checkpoint or an ``.npz`` of named arrays.

  ``key`` picks one entry of a checkpoint that wraps the state dict (e.g. ``'state_dict'``).
  Tensors keep their dtype and shape (PyTorch layouts, e.g. conv ``OIHW``); device locations are
  ignored. Raises :class:`UnsafeCheckpointError` for a pickle that names anything else than
  tensor-rebuild functions, storage types, dtypes and OrderedDict, :class:`CheckpointError`
  (a ``ValueError``) for unreadable input; never runs code from the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such file")
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      head = f.read(2)
    if head[:1] == b"\x80":
      raise CheckpointError(f"{path}: legacy (PyTorch < 1.6) torch.save format is not "
                            f"supported; re-save it with a newer PyTorch")
    raise CheckpointError(f"{path}: neither a torch.save zip checkpoint nor an .npz file")
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    if names and all(n.endswith(".npy") for n in names):
      try:
        with np.load(path, allow_pickle=False) as npz:
          arrays = {k: npz[k] for k in npz.files}
      except ValueError as e:  # e.g. object arrays, which would need pickle
        raise CheckpointError(f"{path}: unreadable .npz: {e}") from None
      return _select(arrays, key, path)
    return _select(_load_torch_zip(path, zf), key, path)
