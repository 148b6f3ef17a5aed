"""Torch-free checkpoint loading (genuine, hand-built and malicious files) and the converters."""
import collections
import io
import os
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from gdw_jax import interop
from gdw_jax.interop import CheckpointError, UnsafeCheckpointError, load_torch_state_dict
from gdw_jax.models.weight_nets import VNet

from tests.official_fixtures import fixture_path


@pytest.fixture(scope="module")
def official_state():
  return load_torch_state_dict(fixture_path("official_resnet32_state.pth"))


# ----------------------------------------------------------------------------- genuine files

def test_official_resnet32_checkpoint_loads_exactly(official_state):
  expected = np.load(fixture_path("official_resnet32_state_expected.npz"), allow_pickle=False)
  assert list(official_state) == list(expected.files) and len(official_state) == 157
  for name in expected.files:
    got, want = official_state[name], expected[name]
    assert got.dtype == want.dtype and got.shape == want.shape, name
    np.testing.assert_array_equal(got, want, err_msg=name)
  assert official_state["layer2.0.conv1.weight"].shape == (32, 16, 3, 3)  # OIHW kept
  assert sum(v.size for k, v in official_state.items() if "running" not in k) == 464_154


def test_cmwnet_weighting_net_loads_with_its_known_outputs():
  sd = load_torch_state_dict(fixture_path("cmwnet_vnet_119.pth"))  # saved from cuda:0
  shapes = {k: v.shape for k, v in sd.items()}
  assert shapes == {"feature.layer.0.weight": (100, 1), "feature.layer.0.bias": (100,),
                    **{f"classfier.layers.{k}.0.weight": (1, 100) for k in range(3)},
                    **{f"classfier.layers.{k}.0.bias": (1,) for k in range(3)}}
  assert {v.dtype for v in sd.values()} == {np.dtype(np.float32)}
  losses = np.array([0.0, 0.5, 1.0, 2.0, 10.0])
  hidden = np.maximum(losses[:, None] * sd["feature.layer.0.weight"][:, 0]
                      + sd["feature.layer.0.bias"], 0.0)
  table = {0: [0.819, 0.666, 0.424, 0.102, 0.000], 1: [0.933, 0.947, 0.959, 0.977, 1.000],
           2: [0.488, 0.467, 0.466, 0.458, 0.254]}  # ../shared/fixtures/README.md (PyTorch)
  for head, expected in table.items():
    z = hidden @ sd[f"classfier.layers.{head}.0.weight"][0] + sd[f"classfier.layers.{head}.0.bias"]
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-z)), expected, atol=6e-4, err_msg=head)


def test_npz_of_named_arrays(tmp_path):
  path = fixture_path("official_resnet32_state_expected.npz")
  sd = load_torch_state_dict(path)
  with np.load(path) as f:
    assert list(sd) == f.files and all(np.array_equal(sd[k], f[k]) for k in f.files)
  bad = tmp_path / "objects.npz"
  np.savez(bad, w=np.array([{"a": 1}], dtype=object))
  with pytest.raises(CheckpointError, match="unreadable .npz"):
    load_torch_state_dict(str(bad))


def test_unreadable_files_are_one_line_errors(tmp_path):
  with pytest.raises(CheckpointError, match="no such file"):
    load_torch_state_dict(str(tmp_path / "missing.pth"))
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))  # pre-1.6 magic number
  with pytest.raises(CheckpointError, match="legacy"):
    load_torch_state_dict(str(legacy))
  text = tmp_path / "text.pth"
  text.write_text("hello")
  with pytest.raises(CheckpointError, match="neither a torch.save zip checkpoint nor an .npz"):
    load_torch_state_dict(str(text))
  other_zip = tmp_path / "other.zip"
  with zipfile.ZipFile(other_zip, "w") as zf:
    zf.writestr("readme.txt", "hi")
  with pytest.raises(CheckpointError, match="not a torch.save archive"):
    load_torch_state_dict(str(other_zip))


# ------------------------------------------ hand-built torch.save archives (without PyTorch)

class _Storage:
  def __init__(self, key, kind, data):
    self.key, self.kind, self.data = key, kind, np.asarray(data)


class _Tensor:
  def __init__(self, storage, offset, size, stride, parameter=False):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
    self.parameter = parameter


def _fake_torch(monkeypatch):
  """Stand-in ``torch`` / ``torch._utils`` modules so pickle can name their globals."""
  torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
  for name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
    def fn(*args):
      raise AssertionError("never called")
    fn.__module__, fn.__name__, fn.__qualname__ = "torch._utils", name, name
    setattr(utils, name, fn)
  for kind in ("FloatStorage", "DoubleStorage", "LongStorage", "BFloat16Storage"):
    setattr(torch, kind, type(kind, (), {"__module__": "torch"}))
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch, utils


def _torch_save(path, obj, monkeypatch, byteorder="little"):
  """Write ``obj`` in the torch.save zip layout; ``_Tensor`` leaves become rebuild calls."""
  torch, utils = _fake_torch(monkeypatch)
  storages = {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, _Storage):
        storages[obj.key] = obj
        return ("storage", getattr(torch, obj.kind), obj.key, "cpu", obj.data.size)
      return None

    def reducer_override(self, obj):
      if not isinstance(obj, _Tensor):
        return NotImplemented
      if obj.parameter:  # nn.Parameter(tensor)
        tensor = _Tensor(obj.storage, obj.offset, obj.size, obj.stride)
        return utils._rebuild_parameter, (tensor, True, collections.OrderedDict())
      return utils._rebuild_tensor_v2, (obj.storage, obj.offset, obj.size, obj.stride, False,
                                        collections.OrderedDict())

  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump(obj)
  order = ">" if byteorder == "big" else "<"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr("archive/byteorder", byteorder)
    for key, st in storages.items():
      zf.writestr(f"archive/data/{key}", st.data.astype(st.data.dtype.newbyteorder(order))
                  .tobytes())
  return path


def test_strided_shared_storages_dtypes_and_byteorder(tmp_path, monkeypatch):
  values = np.arange(12, dtype=np.float64) * 0.5
  shared = _Storage("0", "DoubleStorage", values)
  state = collections.OrderedDict([
      ("a", _Tensor(shared, 2, (2, 3), (3, 1))),             # a contiguous window
      ("a_t", _Tensor(shared, 2, (3, 2), (1, 3))),           # its transpose, same storage
      ("p", _Tensor(shared, 11, (), (), parameter=True)),    # 0-d parameter at the end
      ("steps", _Tensor(_Storage("1", "LongStorage", np.array([7])), 0, (), ())),
      ("bf", _Tensor(_Storage("2", "BFloat16Storage",
                              np.array([1.5, -2.0], ml_dtypes.bfloat16)), 0, (2,), (1,))),
      ("empty", _Tensor(_Storage("3", "FloatStorage", np.zeros(0, np.float32)), 0, (0, 4),
                        (4, 1))),
  ])
  for byteorder in ("little", "big"):
    path = _torch_save(str(tmp_path / f"{byteorder}.pth"), state, monkeypatch, byteorder)
    sd = load_torch_state_dict(path)
    np.testing.assert_array_equal(sd["a"], values[2:8].reshape(2, 3))
    np.testing.assert_array_equal(sd["a_t"], values[2:8].reshape(2, 3).T)
    assert sd["p"].shape == () and sd["p"] == 5.5
    assert sd["steps"].dtype == np.int64 and sd["steps"] == 7
    assert sd["bf"].dtype == ml_dtypes.bfloat16 and list(sd["bf"]) == [1.5, -2.0]
    assert sd["empty"].shape == (0, 4) and sd["empty"].dtype == np.float32
    assert all(v.dtype.isnative for v in sd.values())
    assert sd["a"].flags["C_CONTIGUOUS"] and sd["a"].flags["OWNDATA"]


def test_wrapped_checkpoint_needs_key(tmp_path, monkeypatch):
  w = _Tensor(_Storage("0", "FloatStorage", np.ones(3, np.float32)), 0, (3,), (1,))
  ckpt = {"epoch": 3, "state_dict": collections.OrderedDict([("w", w)]), "best": 0.5}
  path = _torch_save(str(tmp_path / "ckpt.pth"), ckpt, monkeypatch)
  with pytest.raises(CheckpointError, match=r"pass key= one of \['state_dict'\]"):
    load_torch_state_dict(path)
  np.testing.assert_array_equal(load_torch_state_dict(path, key="state_dict")["w"], np.ones(3))
  with pytest.raises(CheckpointError, match="no entry 'model'"):
    load_torch_state_dict(path, key="model")


def test_out_of_bounds_tensor_is_refused(tmp_path, monkeypatch):
  small = _Storage("0", "FloatStorage", np.ones(4, np.float32))
  for size, stride, offset in (((10,), (1,), 0), ((2, 2), (4, 1), 0), ((4,), (1,), 1)):
    path = _torch_save(str(tmp_path / "oob.pth"), {"w": _Tensor(small, offset, size, stride)},
                       monkeypatch)
    with pytest.raises(CheckpointError, match="reaches element"):
      load_torch_state_dict(path)
  path = _torch_save(str(tmp_path / "neg.pth"), {"w": _Tensor(small, 0, (2,), (-1,))},
                     monkeypatch)
  with pytest.raises(CheckpointError, match="bad tensor geometry"):
    load_torch_state_dict(path)


# ---------------------------------------------------------------------- malicious checkpoints

class _Exploit:
  """Unpickling this runs ``fn(*args)``: the classic malicious-checkpoint payload."""

  def __init__(self, fn, *args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


def _zip_pickle(path, payload: bytes):
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
    zf.writestr("archive/byteorder", "little")
  return str(path)


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL and STACK_GLOBAL opcodes
@pytest.mark.parametrize("how", ["os.system", "builtins.eval", "builtins.exec"])
def test_malicious_checkpoint_executes_nothing(tmp_path, protocol, how):
  marker = tmp_path / "pwned"
  command = f"touch {marker}"
  payload = {"os.system": _Exploit(os.system, command),
             "builtins.eval": _Exploit(eval, f"__import__('os').system({command!r})"),
             "builtins.exec": _Exploit(exec, f"open({str(marker)!r}, 'w').close()")}[how]
  state = collections.OrderedDict([("linear.weight", payload)])
  path = _zip_pickle(tmp_path / "evil.pth", pickle.dumps(state, protocol=protocol))
  with pytest.raises(UnsafeCheckpointError, match="refusing to load global") as err:
    load_torch_state_dict(path)
  assert str(err.value).count("\n") == 0
  assert not marker.exists()
  # The payload is live: a plain unpickler would have run it.
  with zipfile.ZipFile(path) as zf:
    pickle.loads(zf.read("archive/data.pkl"))
  assert marker.exists()


def test_payload_after_genuine_tensors_is_refused(tmp_path, monkeypatch):
  marker = tmp_path / "pwned"
  w = _Tensor(_Storage("0", "FloatStorage", np.ones(2, np.float32)), 0, (2,), (1,))
  state = collections.OrderedDict([("w", w), ("b", _Exploit(os.system, f"touch {marker}"))])
  path = _torch_save(str(tmp_path / "mixed.pth"), state, monkeypatch)
  with pytest.raises(UnsafeCheckpointError, match="'(posix|nt|os).system'"):
    load_torch_state_dict(path)
  assert not marker.exists()


def test_allowed_names_cannot_be_abused(tmp_path):
  """Even the allowed globals are our NumPy stand-ins: calling a storage type or rebuilding a
  tensor from a non-storage gives a clear error, not a crash or a memory read."""
  ordered_dict = b"\x80\x02ccollections\nOrderedDict\n)R."
  assert load_torch_state_dict(_zip_pickle(tmp_path / "empty.pth", ordered_dict)) == {}
  call_storage = b"\x80\x02ctorch\nFloatStorage\n)R."
  with pytest.raises(CheckpointError, match="malformed checkpoint pickle"):
    load_torch_state_dict(_zip_pickle(tmp_path / "a.pth", call_storage))
  fake_tensor = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n"
                 b"(K\x00K\x00K\x01\x85K\x01\x85\x89NtRs.")
  with pytest.raises(CheckpointError, match="tensor without a storage"):
    load_torch_state_dict(_zip_pickle(tmp_path / "b.pth", fake_tensor))
  bad_pid = b"\x80\x02}X\x01\x00\x00\x00wX\x03\x00\x00\x00../Qs."
  with pytest.raises(CheckpointError, match="unknown persistent id"):
    load_torch_state_dict(_zip_pickle(tmp_path / "c.pth", bad_pid))


# --------------------------------------------------------------------------------- converters

def test_resnet32_conversion_layouts_and_round_trip(official_state):
  params, model_state = interop.resnet32_from_torch(official_state)
  sd = official_state
  np.testing.assert_array_equal(params["layer2_0"]["conv1"]["kernel"],
                                sd["layer2.0.conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["linear"]["kernel"], sd["linear.weight"].T)
  np.testing.assert_array_equal(params["layer3_4"]["bn2"]["scale"], sd["layer3.4.bn2.weight"])
  np.testing.assert_array_equal(model_state["batch_stats"]["bn1"]["var"], sd["bn1.running_var"])
  back = interop.resnet32_to_torch(params, model_state)
  assert set(back) == set(sd)
  for name in sd:
    assert back[name].dtype == sd[name].dtype and np.array_equal(back[name], sd[name]), name
  with jax.enable_x64(True):
    params64, _ = interop.resnet32_from_torch(official_state, dtype=jnp.float64)
    assert params64["conv1"]["kernel"].dtype == jnp.float64


def test_flax_to_torch_to_flax_round_trip():
  from gdw_jax import models
  shapes = jax.eval_shape(models.get("resnet32", 7).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(0)
  params, model_state = jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  sd = interop.resnet32_to_torch(params, model_state)
  assert sd["linear.weight"].shape == (7, 64) and sd["conv1.weight"].shape == (16, 3, 3, 3)
  params2, state2 = interop.resnet32_from_torch(sd)
  same = jax.tree.map(lambda a, b: np.array_equal(a, b), (params, model_state),
                      (params2, state2))
  assert all(jax.tree.leaves(same))


def test_resnet32_converter_rejects_other_state_dicts(official_state):
  with pytest.raises(CheckpointError, match="no 'linear.weight'"):
    interop.resnet32_from_torch(load_torch_state_dict(fixture_path("cmwnet_vnet_119.pth")))
  missing = {k: v for k, v in official_state.items() if k != "layer3.4.bn2.bias"}
  with pytest.raises(CheckpointError, match=r"missing \['layer3.4.bn2.bias'\]"):
    interop.resnet32_from_torch(missing)
  wrong = {**official_state, "conv1.weight": np.zeros((16, 3, 5, 5), np.float32)}
  with pytest.raises(CheckpointError, match=r"shape mismatch conv1.weight \(16, 3, 5, 5\)"):
    interop.resnet32_from_torch(wrong)
  extra = {**official_state, "layer4.0.conv1.weight": np.zeros((1, 1, 3, 3), np.float32)}
  with pytest.raises(CheckpointError, match=r"unexpected \['layer4.0.conv1.weight'\]"):
    interop.resnet32_from_torch(extra)
  tracked = {**official_state, "bn1.num_batches_tracked": np.array(5)}  # torchvision-style BN
  interop.resnet32_from_torch(tracked)


def test_vnet_conversion_computes_the_torch_vnet():
  with np.load(fixture_path("official_gdw_cifar10_2steps.npz")) as f:
    sd = {k[len("vinit/"):]: f[k] for k in f.files if k.startswith("vinit/")}
  params = interop.vnet_from_torch(sd, dtype=jnp.float32)
  loss = np.array([[0.0], [0.3], [1.0], [2.5], [8.0]], np.float32)
  ours = VNet(hidden=100).apply({"params": params}, loss)
  h = np.maximum(loss @ sd["linear1.weight"].T + sd["linear1.bias"], 0.0)
  torch_out = 1.0 / (1.0 + np.exp(-(h @ sd["linear2.weight"].T + sd["linear2.bias"])))
  np.testing.assert_allclose(ours, torch_out, rtol=1e-5)
  back = interop.vnet_to_torch(params)
  assert set(back) == set(sd)
  for k in sd:
    np.testing.assert_allclose(back[k], sd[k], rtol=1e-7)
  with pytest.raises(CheckpointError, match="not a VNet state dict"):
    interop.vnet_from_torch({**sd, "linear3.weight": np.zeros((1, 1))})


def test_generic_names_for_sequential_modules():
  sd = load_torch_state_dict(fixture_path("cmwnet_vnet_119.pth"))
  variables = interop.torch_to_flax(sd)
  assert set(variables) == {"params"}
  assert variables["params"]["classfier"]["layers_2_0"]["kernel"].shape == (100, 1)
  assert variables["params"]["feature"]["layer_0"]["kernel"].shape == (1, 100)
  back = interop.flax_to_torch(variables["params"])
  assert set(back) == set(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
