"""Weighting-net conversion (PyTorch names <-> Flax), export / load, frozen transfer."""
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from gdw_jax import methods, runs
from gdw_jax.methods import transfer
from gdw_jax.models.weight_nets import CMWNet
from gdw_jax.validation import ConfigError
from tests.official_fixtures import fixture_path

HEAD_SLOPE_BIAS = [(-2.0, 1.5), (0.5, 2.6), (-0.1, 0.0)]


def checkable_state_dict(hidden=100):
  """Trunk = identity copies of the loss (w 1, b 0), head k = mean * a_k + b_k, so for a loss
  l >= 0 head k outputs exactly sigmoid(a_k l + b_k)."""
  sd = {"feature.layer.0.weight": np.ones((hidden, 1), np.float32),
        "feature.layer.0.bias": np.zeros((hidden,), np.float32)}
  for k, (a, b) in enumerate(HEAD_SLOPE_BIAS):
    sd[f"classfier.layers.{k}.0.weight"] = np.full((1, hidden), a / hidden, np.float32)
    sd[f"classfier.layers.{k}.0.bias"] = np.array([b], np.float32)
  return sd


def torch_formula(sd, loss, head):
  """What the official ``VNet.forward`` computes, in NumPy with PyTorch layouts."""
  h = np.maximum(sd["feature.layer.0.weight"] @ loss[None, :] + sd["feature.layer.0.bias"][:, None],
                 0.0)
  out = sd[f"classfier.layers.{head}.0.weight"] @ h + sd[f"classfier.layers.{head}.0.bias"][:, None]
  return 1.0 / (1.0 + np.exp(-out[0]))


def apply(params, loss, family):
  heads, hidden = params["heads_kernel"].shape
  net = CMWNet(hidden=hidden, num_heads=heads)
  return np.asarray(net.apply({"params": params}, jnp.asarray(loss)[:, None],
                              jnp.asarray(family)))[:, 0]


def test_converter_gives_the_checkable_function_per_head():
  params = transfer.cmwnet_from_torch(checkable_state_dict())
  loss = np.array([0.0, 0.5, 1.0, 2.0, 10.0], np.float32)
  for k, (a, b) in enumerate(HEAD_SLOPE_BIAS):
    want = 1.0 / (1.0 + np.exp(-(a * loss + b)))
    np.testing.assert_allclose(apply(params, loss, np.full(5, k)), want, rtol=1e-5)


def test_converter_matches_the_pytorch_formula_and_round_trips():
  rng = np.random.default_rng(0)
  sd = {"feature.layer.0.weight": rng.normal(size=(7, 1)).astype(np.float32),
        "feature.layer.0.bias": rng.normal(size=(7,)).astype(np.float32)}
  for k in range(2):
    sd[f"classfier.layers.{k}.0.weight"] = rng.normal(size=(1, 7)).astype(np.float32)
    sd[f"classfier.layers.{k}.0.bias"] = rng.normal(size=(1,)).astype(np.float32)
  params = transfer.cmwnet_from_torch(sd)
  loss = np.linspace(0, 4, 9).astype(np.float32)
  for k in range(2):
    np.testing.assert_allclose(apply(params, loss, np.full(9, k)), torch_formula(sd, loss, k),
                               rtol=1e-5)
  back = transfer.cmwnet_to_torch(params)
  assert set(back) == set(sd)
  for key in sd:
    np.testing.assert_array_equal(back[key], sd[key])
  with pytest.raises(ValueError, match="missing"):
    transfer.cmwnet_from_torch({"linear1.weight": np.zeros((3, 1))})


def test_vnet_converter_round_trips():
  c = digits.get_config()
  method = methods.get("mwnet")(c, methods.DataInfo(3, 10, np.ones(3), 1))
  params = method.init(jax.random.PRNGKey(0))["params"]
  sd = transfer.to_torch(params)
  assert sd["linear1.weight"].shape == (100, 1) and sd["linear2.weight"].shape == (1, 100)
  again = transfer.vnet_from_torch(sd)
  jax.tree.map(np.testing.assert_array_equal, again, jax.tree.map(np.asarray, params))


def _transfer_config(path, method="cmwnet"):
  c = digits.get_config()
  c.method = method
  c.cmwnet.transfer = path
  c.cmwnet.families = (0, 1, 2, 0)
  c.cmwnet_sl.warmup_epochs = 0
  return c


@pytest.mark.parametrize("method_name", ["cmwnet", "cmwnet_sl"])
def test_frozen_transfer_net_is_used_unchanged(tmp_path, method_name):
  path = str(tmp_path / "net.npz")
  np.savez(path, **checkable_state_dict(hidden=8))
  c = _transfer_config(path, method_name)
  method = methods.get(method_name)(c, methods.DataInfo(4, 10, np.ones(4), 5))
  assert not method.uses_meta and method.epoch_start is None
  from gdw_jax.models.mlp import MLP
  from gdw_jax import bilevel, models
  model = models.functional(MLP(4, hidden=(5,)))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
  y = jnp.array([0, 1, 2, 3, 0, 1])
  params, ms = model.init(jax.random.PRNGKey(0), x)
  state = method.init(jax.random.PRNGKey(1), params, ms)
  assert "opt" not in state["net"]
  info = None
  if method.transform_input is not None:
    x, info = method.transform_input(state, jax.random.PRNGKey(2), x, y, jnp.asarray(0))
  logits, _ = model.apply(params, ms, x, True)
  ctx = bilevel.StepContext(apply_fn=model.apply, params=params, model_state=ms, x=x, labels=y,
                            logits=logits, lr=jnp.asarray(0.1), step=jnp.asarray(0),
                            rng=jax.random.PRNGKey(3), input_info=info)
  _, new_state, aux = method.update(ctx, state)
  jax.tree.map(np.testing.assert_array_equal, new_state["net"], state["net"])
  fam = np.array([0, 1, 2, 0])[np.asarray(y)]
  ce = -np.asarray(jax.nn.log_softmax(logits))[np.arange(6), np.asarray(y)]
  want = [1 / (1 + np.exp(-(HEAD_SLOPE_BIAS[f][0] * l + HEAD_SLOPE_BIAS[f][1])))
          for f, l in zip(fam, ce)]
  np.testing.assert_allclose(np.asarray(aux["weights"])[:, 0], want, rtol=1e-5)


def test_export_of_a_saved_method_state_loads_back(tmp_path):
  c = digits.get_config()
  c.method = "cmwnet"
  method = methods.get("cmwnet")(c, methods.DataInfo(3, 10, np.array([30, 10, 2]), 1))
  state = method.init(jax.random.PRNGKey(0))
  blob = tmp_path / "method_state.msgpack"
  blob.write_bytes(flax.serialization.to_bytes(jax.device_get(state)))
  out = str(tmp_path / "net.npz")
  transfer.export_run(str(blob), out)
  params = transfer.cmwnet_from_torch(transfer.load(out))
  jax.tree.map(np.testing.assert_array_equal, params,
               jax.tree.map(np.asarray, state["net"]["params"]))


def test_bad_transfer_files_are_config_errors(tmp_path):
  c = _transfer_config(str(tmp_path / "missing.npz"))
  with pytest.raises(ConfigError, match="does not exist"):
    runs.setup(c)
  wrong = str(tmp_path / "wrong.npz")
  np.savez(wrong, **{"linear1.weight": np.zeros((3, 1))})
  c = _transfer_config(wrong)
  c.cmwnet.families = ()
  with pytest.raises(ConfigError, match="not a CMW-Net"):
    runs.setup(c)


def test_official_cmwnet_vnet_119_reproduces_the_spec_table():
  """The official learned net, read with the torch-free safe loader (never skipped)."""
  from gdw_jax import interop
  sd = interop.load_torch_state_dict(fixture_path("cmwnet_vnet_119.pth"))
  params = transfer.cmwnet_from_torch(sd)
  loss = np.array([0.0, 0.5, 1.0, 2.0, 10.0], np.float32)
  table = {0: [0.819, 0.666, 0.424, 0.102, 0.000], 1: [0.933, 0.947, 0.959, 0.977, 1.000],
           2: [0.488, 0.467, 0.466, 0.458, 0.254]}
  for head, want in table.items():
    np.testing.assert_allclose(apply(params, loss, np.full(5, head)), want, atol=6e-4)
