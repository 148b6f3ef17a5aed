"""CIFAR end to end: configs/cifar.py recipes, a few GDW steps on mocked CIFAR, bad-input errors."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cifar as cifar_config
from gdw_jax import runs, train, validation
from gdw_jax.validation import ConfigError
from tests import cifar_fixtures as fx

# The classifier of the end-to-end run. The recipes use 'resnet32' (the parity issue's model,
# tested on its own in test_resnet.py / test_parity.py); the two-conv CNN with BatchNorm keeps
# this test fast (58 s with ResNet-32 here) and exercises train-mode BN inside the meta step.
MODEL, MODEL_KEYS = "cnn", {}


def tiny(config, **kw):
  config.model = MODEL
  for k, v in {**MODEL_KEYS, **kw}.items():
    setattr(config, k, v)
  config.progress = False
  return config


def test_gdw_recipe_is_the_papers():
  c = cifar_config.get_config("dataset=cifar10,noise=uniform,rate=0.4,method=gdw")
  assert (c.recipe, c.model, c.num_epochs, c.lr_schedule, c.learning_rate) == (
      "gdw", "resnet32", 80, "cosine_epoch", 0.1)
  assert (c.batch_size, c.meta_batch_size, c.meta_per_class, c.weight_decay) == (100, 100, 100,
                                                                                  5e-4)
  assert (c.gdw.outer_lr, c.gdw.clip, c.vnet.optimizer, c.vnet.lr) == (100.0, 0.2, "adam", 1e-3)
  assert (c.noise_type, c.noise_rate, c.split_rng, c.meta_seed) == ("uniform", 0.4, "numpy", -1)
  c100 = cifar_config.get_config("dataset=cifar100,method=gdw,official=true,seed=100")
  assert (c100.gdw.outer_lr, c100.meta_per_class) == (1000.0, 10)
  assert (c100.split_rng, c100.meta_seed, c100.seed) == ("legacy", 1, 100)


@pytest.mark.parametrize("arg,recipe,model", [
    ("method=mwnet,noise=uniform", "mwnet_wrn", "wrn28_10"),
    ("method=mwnet,noise=flip2,rate=0.4", "mwnet_resnet32", "resnet32"),
    ("method=mwnet,imbalance=0.01", "mwnet_lt", "resnet32"),
    ("method=cmwnet,imbalance=0.01", "cmwnet_lt", "resnet32"),
    ("method=cmwnet_sl,noise=uniform,rate=0.8", "cmwnet_fi", "preact_resnet18"),
    ("method=erm,imbalance=0.1,imbalance_type=step", "gdw", "resnet32"),
    ("method=mwnet,recipe=gdw", "gdw", "resnet32"),
])
def test_default_recipes(arg, recipe, model):
  c = cifar_config.get_config(arg)
  assert (c.recipe, c.model) == (recipe, model)
  if "imbalance" in arg:
    assert c.noise_type == "none"  # long-tail tables are noise-free unless noise= is given


def test_recipe_details():
  wrn = cifar_config.get_config("method=mwnet")
  assert (wrn.num_epochs, tuple(wrn.lr_milestones), wrn.nesterov, wrn.vnet.optimizer) == (
      41, (37, 39), True, "sgd")
  lt = cifar_config.get_config("dataset=cifar100,method=mwnet,imbalance=0.01")
  assert (lt.meta_per_class, lt.vnet.lr, tuple(lt.lr_milestones)) == (10, 1e-5, (79, 89))
  fi = cifar_config.get_config("method=cmwnet_sl")
  assert (fi.batch_size, fi.learning_rate, fi.num_epochs, tuple(fi.lr_milestones)) == (
      128, 0.02, 300, (150,))
  human = cifar_config.get_config("cifar_n=worse_label")
  assert (human.noise_type, human.noise_rate, human.cifar_n) == ("none", 0.0, "worse_label")
  with pytest.raises(ValueError, match="unknown recipe 'x'"):
    cifar_config.get_config("recipe=x")
  with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
    cifar_config.get_config("dataset=svhn")


def test_few_gdw_steps_on_mocked_cifar(tmp_path):
  c = tiny(cifar_config.get_config("dataset=cifar10,noise=uniform,rate=0.4,method=gdw"),
           num_epochs=2, batch_size=20, meta_batch_size=10, meta_per_class=2,
           eval_batch_size=64)
  with tfds.testing.mock_data(num_examples=100):
    final = train.train_and_evaluate(c, str(tmp_path))
  assert final["steps"] == 2 * int(np.ceil(80 / 20)) and final["num_epochs"] == 2
  assert np.isfinite(final["final_train_loss"])
  pred = np.load(tmp_path / "predictions.npz")  # the accuracy is the saved predictions' own
  assert final["last_acc"] == pytest.approx(
      100 * np.mean(pred["test_pred"] == pred["test_labels"]))
  summary = json.load(open(tmp_path / "data.json"))
  assert (summary["num_train"], summary["num_meta"], summary["num_meta_in_train"]) == (80, 20, 0)
  labels = np.load(tmp_path / "labels.npz")
  assert not np.intersect1d(labels["meta_indices"], labels["train_indices"]).size
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert len(rows) == 2 and all(np.isfinite(r["meta_loss"]) for r in rows)
  w = np.load(tmp_path / "sample_weights.npz")["final_weights"]
  assert w.shape == (80, 10) and np.all(np.isfinite(w))  # GDW's class-level weights


def test_official_split_from_a_python_archive(tmp_path):
  # The legacy replay with GDW's meta seed: the meta set overlaps the training set.
  path = fx.make_python_archive(str(tmp_path), "cifar10", n_train=200, seed=3)[0]
  c = tiny(cifar_config.get_config(f"method=erm,official=true,seed=100,archive={path}"),
           meta_per_class=5, num_epochs=1, batch_size=50)
  ds = runs.setup(c)[0]
  assert ds.x_train.dtype == np.uint8 and ds.num_train == 200 - 50
  assert 0 < np.isin(ds.meta_indices, ds.train_indices).sum() < 50
  assert ds.augment is not None and ds.preprocess is not None


def test_bad_cifar_inputs_are_config_errors(tmp_path):
  c = tiny(cifar_config.get_config(f"method=erm,data_dir={tmp_path}"))
  with pytest.raises(ConfigError, match="not prepared.*cifar_archive.*tfds build cifar10"):
    runs.setup(c)
  path = fx.make_python_archive(str(tmp_path), "cifar10", n_train=50)[0]
  np.save(tmp_path / "bad.npy", np.zeros(49, np.int64))
  c = tiny(cifar_config.get_config(f"method=erm,archive={path},label_file={tmp_path}/bad.npy"))
  with pytest.raises(ConfigError, match="has 49 labels"):
    runs.setup(c)
  c = tiny(cifar_config.get_config(f"method=erm,archive={path}"), meta_per_class=100)
  with pytest.raises(ConfigError, match="meta set of 100 per class is larger than class"):
    runs.setup(c)
  c = tiny(cifar_config.get_config(f"method=erm,archive={path},imbalance=0.001"),
           meta_per_class=0)
  with pytest.raises(ConfigError, match="leaves class"):
    runs.setup(c)


def test_every_command_in_the_docs_parses():
  import re
  doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "cifar.md")).read()
  found = re.findall(r"`--config=configs/cifar\.py:([^`]*)`|`(method=[^`]*)`", doc)
  args = [(a or b).replace("$C100", "c100.tar.gz").replace("$C10", "c10.tar.gz")
          for a, b in found]
  # the two GDW README rows, 8 MW-Net rows, 16 CMW-Net rows (LT, noise, PMD, hybrid), 3 ABSGD
  assert len(args) >= 28
  for arg in args:
    c = cifar_config.get_config(arg)
    validation.validate(c)
    assert c.method in arg and c.recipe
