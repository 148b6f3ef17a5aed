"""``--config.init_from``: PyTorch weights as the starting point, head re-initialised, and the
one-line errors for checkpoints that do not fit (before anything is written)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar as cifar_config
from configs import common
from gdw_jax import interop, models, runs, train, train_step, validation
from gdw_jax.interop import CheckpointError, load_torch_state_dict
from gdw_jax.validation import ConfigError

from tests import cifar_fixtures as fx
from tests.official_fixtures import fixture_path

RESNET50 = "torchvision_resnet50_state.pth"
RESNET32 = "official_resnet32_state.pth"


def _zeros(model_name, num_classes, dtype=jnp.float32):
  """Stand-in ``(params, model_state)`` of the model: zeros of its shapes (no compute)."""
  fns = models.get(model_name, num_classes, None, dtype)
  shapes = jax.eval_shape(fns.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 64, 64, 3), dtype))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@pytest.fixture(scope="module")
def resnet50_sd():
  return load_torch_state_dict(fixture_path(RESNET50))


def test_init_from_replaces_everything_but_the_head(resnet50_sd):
  params, state = _zeros("resnet50", 14)
  new_params, new_state = interop.init_from(fixture_path(RESNET50), params, state, "resnet50")
  loaded = interop.torch_to_flax(resnet50_sd)
  # The head keeps the model's own (here: zero) initialisation for 14 classes...
  assert new_params["fc"]["kernel"].shape == (2048, 14)
  assert not np.any(new_params["fc"]["kernel"]) and not np.any(new_params["fc"]["bias"])
  # ...every other parameter and running statistic is the checkpoint's, bit for bit.
  body = {k: v for k, v in loaded["params"].items() if k != "fc"}
  same = jax.tree.map(np.array_equal, {k: new_params[k] for k in body}, body)
  assert all(jax.tree.leaves(same)) and len(jax.tree.leaves(same)) == 159  # 53 convs, 53 BNs x 2
  same = jax.tree.map(np.array_equal, new_state["batch_stats"], loaded["batch_stats"])
  assert all(jax.tree.leaves(same)) and len(jax.tree.leaves(same)) == 53 * 2
  np.testing.assert_array_equal(new_params["layer1_0"]["downsample_0"]["kernel"],
                                resnet50_sd["layer1.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  assert interop.init_from("", params, state, "resnet50") == (params, state)


def test_init_from_casts_to_the_models_dtype():
  with jax.enable_x64(True):
    params, state = _zeros("resnet32", 3, jnp.float64)
    new_params, new_state = interop.init_from(fixture_path(RESNET32), params, state, "resnet32")
    assert {a.dtype for a in jax.tree.leaves((new_params, new_state))} == {jnp.dtype("float64")}
    sd = load_torch_state_dict(fixture_path(RESNET32))
    np.testing.assert_array_equal(new_params["layer3_4"]["bn2"]["scale"],
                                  sd["layer3.4.bn2.weight"].astype(np.float64))


def test_headless_and_data_parallel_checkpoints_load(tmp_path):
  sd = load_torch_state_dict(fixture_path(RESNET32))
  path = str(tmp_path / "dp.npz")  # nn.DataParallel names, no head
  np.savez(path, **{f"module.{k}": v for k, v in sd.items() if not k.startswith("linear.")})
  params, state = _zeros("resnet32", 10)
  new_params, _ = interop.init_from(path, params, state, "resnet32")
  np.testing.assert_array_equal(new_params["conv1"]["kernel"],
                                sd["conv1.weight"].transpose(2, 3, 1, 0))
  assert not np.any(new_params["linear"]["kernel"])  # fresh head, even for 10 classes


def test_checkpoints_that_do_not_fit_name_the_problem(resnet50_sd, tmp_path):
  params, state = _zeros("resnet50", 14)

  def load(sd, name):
    path = str(tmp_path / f"{name}.npz")
    np.savez(path, **sd)
    return lambda: interop.init_from(path, params, state, "resnet50")

  missing = load({k: v for k, v in resnet50_sd.items() if k != "layer3.5.bn2.bias"}, "missing")
  with pytest.raises(CheckpointError, match=r"missing.npz: does not fit model resnet50: missing "
                                            r"\['layer3.5.bn2.bias'\], unexpected \[\]$"):
    missing()
  wrong = load({**resnet50_sd, "layer1.0.conv2.weight": np.zeros((64, 64, 1, 1), np.float32)},
               "wrong")
  with pytest.raises(CheckpointError, match=r"tensor layer1.0.conv2.weight has shape "
                                            r"\(64, 64, 1, 1\), model resnet50 needs "
                                            r"\(64, 64, 3, 3\)"):
    wrong()
  with pytest.raises(CheckpointError, match="holds resnet32 weights .* but the model is resnet50"):
    interop.init_from(fixture_path(RESNET32), params, state, "resnet50")
  with pytest.raises(CheckpointError, match="model mlp has no PyTorch layout"):
    interop.init_from(fixture_path(RESNET32), params, state, "mlp")
  with pytest.raises(CheckpointError, match="holds resnet50 weights .* but the model is vgg19_bn"):
    interop.check_init_from(fixture_path(RESNET50), "vgg19_bn")


def _config(**overrides):
  c = common.base_config()
  c.update(overrides)
  return c


def test_config_errors_come_before_the_workdir_is_written(tmp_path):
  cases = {
      "no such file": dict(model="resnet50", init_from=str(tmp_path / "none.pth")),
      "holds resnet50 weights": dict(model="resnet32", init_from=fixture_path(RESNET50)),
      "model mlp has no PyTorch layout": dict(init_from=fixture_path(RESNET32)),
      "unknown compute_dtype 'float16'": dict(model="resnet50", compute_dtype="float16"),
      "model mlp computes in its parameter dtype only": dict(compute_dtype="bfloat16"),
      "needs dtype=float32": dict(model="resnet50", compute_dtype="bfloat16", dtype="float64"),
  }
  for message, overrides in cases.items():
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message) as err:
      train.train_and_evaluate(_config(**overrides), str(workdir))
    assert "\n" not in str(err.value) and not workdir.exists()
  validation.validate(_config(model="resnet50", init_from=fixture_path(RESNET50),
                              compute_dtype="bfloat16"))


def test_trainer_starts_from_the_checkpoint_before_the_method_sees_it(tmp_path):
  """Through the trainer's own setup and state creation: CMW-Net-SL's EMA teacher is a copy of
  the model at creation, so it must hold the pretrained weights too."""
  archive = fx.make_python_archive(str(tmp_path), "cifar10", n_train=60)[0]
  c = cifar_config.get_config(f"method=cmwnet_sl,archive={archive}")
  c.update(dict(model="resnet32", init_from=fixture_path(RESNET32), num_epochs=20, batch_size=10,
                meta_per_class=0))
  ds, _, model, method, _, tx = runs.setup(c)
  x = ds.preprocess(ds.x_train[:2])
  # A zero initialisation in place of ResNet-32's (whose compile would dominate this test).
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  model = model._replace(init=lambda rng, x: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                          shapes))
  state = train_step.create_train_state(jax.random.PRNGKey(0), model, method, tx, x, c.init_from,
                                   c.model)
  sd = load_torch_state_dict(fixture_path(RESNET32))
  for params in (state.params, state.method_state["ema"]["params"]):
    np.testing.assert_array_equal(params["layer2_0"]["conv1"]["kernel"],
                                  sd["layer2.0.conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(state.model_state["batch_stats"]["bn1"]["var"],
                                sd["bn1.running_var"])
  assert not np.any(state.params["linear"]["kernel"])  # the head: the model's own init
  fresh = train_step.create_train_state(jax.random.PRNGKey(0), model, method, tx, x)
  assert not any(np.any(a) for a in jax.tree.leaves(fresh.params))  # no init_from: untouched
  assert os.listdir(tmp_path) == [os.path.basename(archive)]  # setup wrote nothing
