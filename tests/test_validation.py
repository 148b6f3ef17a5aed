"""Config validation: every bad input gives a one-line ConfigError before any work starts."""
import json
import os

import numpy as np
import pytest

from configs import digits
from gdw_jax import train, validation
from gdw_jax.data import sources
from gdw_jax.validation import ConfigError


def _set(key, value):
  def mutate(c):
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    with node.ignore_type():  # a config file may hold any type; ConfigDict would refuse it here
      node[leaf] = value
  return mutate


def _all(*mutators):
  def mutate(c):
    for m in mutators:
      m(c)
  return mutate


def _delete(key):
  def mutate(c):
    with c.unlocked():
      del c[key]
  return mutate


# (id, mutation of the digits config, words the one-line message must contain)
STATIC_CASES = [
    ("unknown_method", _set("method", "mwnett"), ["unknown method 'mwnett'", "valid:", "gdw"]),
    ("unknown_dataset", _set("dataset", "cifar7"), ["unknown dataset", "digits"]),
    ("unknown_model", _set("model", "resnet9000"), ["unknown model", "mlp"]),
    ("unknown_noise", _set("noise_type", "pairflip"), ["unknown noise_type", "flip2"]),
    ("unknown_imbalance", _set("imbalance_type", "linear"), ["unknown imbalance_type", "exp"]),
    ("unknown_schedule", _set("lr_schedule", "cosine"), ["unknown lr_schedule", "cosine_epoch"]),
    ("unknown_dtype", _set("dtype", "float16"), ["unknown dtype", "float32"]),
    ("unknown_vnet_opt", _all(_set("method", "mwnet"), _set("vnet.optimizer", "rmsprop")),
     ["unknown vnet.optimizer 'rmsprop'", "adam"]),
    ("unknown_real_weights", _all(_set("method", "mwnet"), _set("mwnet.real_weights", "old")),
     ["unknown mwnet.real_weights", "updated"]),
    ("batch_type", _set("batch_size", 2.5), ["batch_size must be an integer", "2.5"]),
    ("batch_zero", _set("batch_size", 0), ["batch_size must be >= 1"]),
    ("epochs_bool", _set("num_epochs", True), ["num_epochs must be an integer"]),
    ("noise_rate_range", _set("noise_rate", 1.5), ["noise_rate must be in [0, 1], got 1.5"]),
    ("imbalance_zero", _set("imbalance_factor", 0.0), ["imbalance_factor must be in (0, 1], got 0.0"]),
    ("lr_negative", _set("learning_rate", -0.1), ["learning_rate must be > 0.0"]),
    ("momentum_range", _set("momentum", 1.2), ["momentum must be in [0, 1], got 1.2"]),
    ("seed_negative", _set("seed", -1), ["seed must be >= 0"]),
    ("clamp_zero", _set("prob_clamp", 0.0), ["prob_clamp must be in (0, 1], got 0.0"]),
    ("vnet_hidden", _all(_set("method", "gdw"), _set("vnet.hidden", 0)),
     ["vnet.hidden must be >= 1"]),
    ("gdw_clip", _set("gdw.clip", 0.0), ["gdw.clip must be > 0.0"]),
    ("gdw_weight_range", _all(_set("gdw.weight_min", 2.0), _set("gdw.weight_max", 1.0)),
     ["gdw.weight_min must be > 0 and <= gdw.weight_max"]),
    ("gdw_clamp_one", _set("prob_clamp", 1.0), ["gdw needs prob_clamp < 1"]),
    ("bool_type", _set("drop_last", 1), ["drop_last must be True or False"]),
    ("milestones", _all(_set("lr_schedule", "step_epoch"), _set("lr_milestones", (30, 10))),
     ["lr_milestones must be increasing"]),
    ("nesterov_no_momentum", _all(_set("nesterov", True), _set("momentum", 0.0)),
     ["nesterov=True needs momentum > 0"]),
    ("meta_method_no_meta", _all(_set("method", "mwnet"), _set("meta_per_class", 0)),
     ["mwnet needs a meta set"]),
    ("checkpoint_every", _set("checkpoint_every_steps", -5),
     ["checkpoint_every_steps must be >= 0"]),
    ("keep_checkpoints", _set("keep_checkpoints", 0), ["keep_checkpoints must be >= 1"]),
    ("num_devices_type", _set("num_devices", "all"), ["num_devices must be an integer"]),
    ("coordinator_without_distributed", _set("coordinator_address", "10.0.0.1:1234"),
     ["distributed=False"]),
    ("process_id_range", _all(_set("distributed", True), _set("coordinator_address", "h:1"),
                              _set("num_processes", 2), _set("process_id", 2)),
     ["process_id must be in [0, 2), got 2"]),
    ("process_id_without_coordinator", _set("num_processes", 4), ["need coordinator_address"]),
    ("missing_key", _delete("batch_size"), ["config has no key 'batch_size'"]),
    ("lease_stale_short", _set("lease_stale_s", 10.0),
     ["lease_stale_s must be at least 60 (seconds; the lease's heartbeat comes every 30 s), "
      "got 10"]),
    ("lease_stale_type", _set("lease_stale_s", "5m"), ["lease_stale_s must be a number, got '5m'"]),
    ("break_lease_type", _set("break_lease", "yes"), ["break_lease must be True or False"]),
]


@pytest.mark.parametrize("mutate,words", [c[1:] for c in STATIC_CASES],
                         ids=[c[0] for c in STATIC_CASES])
def test_static_errors(mutate, words):
  config = digits.get_config()
  mutate(config)
  with pytest.raises(ConfigError) as e:
    validation.validate(config)
  msg = str(e.value)
  assert "\n" not in msg
  for w in words:
    assert w in msg, msg


def test_defaults_and_used_groups_are_valid():
  for method in ("erm", "mwnet", "gdw"):
    config = digits.get_config(f"method={method}")
    validation.validate(config)
  config = digits.get_config("method=mwnet")
  config.vnet.lr = 0.01  # read by mwnet: fine
  config.mwnet.real_weights = "initial"
  validation.validate(config)


@pytest.mark.parametrize("method,key,words", [
    ("erm", "vnet.lr", ["--config.vnet.lr is set but method erm does not read", "gdw, mwnet"]),
    ("mwnet", "gdw.outer_lr", ["--config.gdw.outer_lr is set but method mwnet"]),
    ("gdw", "mwnet.real_weights", ["--config.mwnet.real_weights is set but method gdw"]),
    ("absgd", "cmwnet.transfer", ["method absgd does not read the cmwnet options"]),
])
def test_command_line_option_for_another_method(method, key, words):
  config = digits.get_config(f"method={method}")
  with pytest.raises(ConfigError) as e:
    validation.check_overrides(config, [key, "num_epochs"])
  for w in words:
    assert w in str(e.value)
  validation.check_overrides(config, ["num_epochs", "seed", "loss.name"])  # read by every method


def test_config_files_may_tune_every_group():
  config = digits.get_config("method=erm")   # digits scales cmwnet_sl / absgd / loss switches
  config.gdw.outer_lr = 1000.0               # as configs/cifar.py does for CIFAR-100
  validation.validate(config)


def test_cli_rejects_option_for_another_method(tmp_path):
  import subprocess, sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  r = subprocess.run([sys.executable, "-m", "gdw_jax.main", f"--workdir={tmp_path / 'w'}",
                      "--config.method=erm", "--config.vnet.lr=0.01"], cwd=root,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2
  assert "gdw_jax: error: --config.vnet.lr is set but method erm does not read" in r.stderr
  assert not (tmp_path / "w").exists()


def test_tensorboard_without_tensorboardx(monkeypatch):
  import builtins
  real_import = builtins.__import__

  def fake_import(name, *args, **kwargs):
    if name == "tensorboardX":
      raise ImportError("no tensorboardX")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", fake_import)
  config = digits.get_config()
  config.tensorboard = True
  with pytest.raises(ConfigError, match=r"tensorboard=True needs tensorboardX"):
    validation.validate(config)


BATCH_CASES = [
    # (num_train, batch_size, drop_last, devices, words)
    (1197, 100, False, 3, ["batch_size 100 does not divide over 3 devices"]),
    (1197, 100, False, 4, ["last batch has 97 samples", "set drop_last=True"]),
    (50, 100, True, 1, ["batch_size 100 is larger than the training set (50)"]),
]


@pytest.mark.parametrize("n,bs,drop_last,devices,words", BATCH_CASES)
def test_batch_vs_data_and_devices(n, bs, drop_last, devices, words):
  config = digits.get_config()
  config.batch_size, config.drop_last = bs, drop_last
  with pytest.raises(ConfigError) as e:
    validation.validate_data(config, n, devices)
  assert "\n" not in str(e.value)
  for w in words:
    assert w in str(e.value)


def test_batches_that_divide_pass():
  config = digits.get_config()
  config.batch_size = 100
  config.drop_last = True
  validation.validate_data(config, 1197, 4)   # 11 full batches of 25 per device
  config.drop_last = False
  validation.validate_data(config, 1196, 4)   # last batch of 96 = 4 x 24
  validation.validate_data(config, 1197, 1)


def test_too_many_devices():
  config = digits.get_config()
  config.num_devices = 8
  with pytest.raises(ConfigError, match=r"num_devices=8 but only 2 device\(s\) are available"):
    validation.validate_devices(config, 2)


def _assert_fails_before_writing(config, tmp_path, words):
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError) as e:
    train.train_and_evaluate(config, str(workdir))
  assert "\n" not in str(e.value)
  for w in words:
    assert w in str(e.value), str(e.value)
  assert not workdir.exists()


def test_end_to_end_static_error_writes_nothing(tmp_path):
  config = digits.get_config()
  config.noise_rate = -0.2
  _assert_fails_before_writing(config, tmp_path, ["noise_rate must be in [0, 1], got -0.2"])


def test_meta_set_larger_than_a_class(tmp_path):
  config = digits.get_config()
  config.meta_per_class = 500
  _assert_fails_before_writing(config, tmp_path,
                               ["meta set of 500 per class is larger than class"])


def test_imbalance_emptying_a_class(tmp_path):
  config = digits.get_config()
  config.imbalance_factor = 1e-4
  _assert_fails_before_writing(config, tmp_path, ["no training image", "larger factor"])


def test_missing_data_files(tmp_path):
  name = "needs_files_for_test"

  def needs_files(config):
    path = os.path.join(config.data_dir, "train.npz")
    return np.load(path)  # raises FileNotFoundError

  sources.register(name)(needs_files)
  try:
    config = digits.get_config()
    config.dataset = name
    config.data_dir = str(tmp_path / "nowhere")
    _assert_fails_before_writing(config, tmp_path,
                                 [f"dataset '{name}': missing data", "nowhere/train.npz"])
  finally:
    sources._SOURCES.pop(name)


def test_workdir_is_a_file(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(ConfigError, match="exists and is not a directory"):
    train.train_and_evaluate(digits.get_config(), str(path))
  assert path.read_text() == "x"


def test_workdir_with_another_config(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  old = digits.get_config()
  (workdir / "config.json").write_text(old.to_json_best_effort())
  new = digits.get_config()
  new.noise_rate = 0.2
  new.method = "mwnet"
  new.progress = False  # runtime keys: may differ
  new.update(break_lease=True, lease_stale_s=900.0)
  with pytest.raises(ConfigError) as e:
    train.train_and_evaluate(new, str(workdir))
  msg = str(e.value)
  assert "different config (differs in: method, noise_rate)" in msg and "\n" not in msg
  assert sorted(os.listdir(workdir)) == ["config.json"]
  assert json.loads((workdir / "config.json").read_text())["method"] == "gdw"
