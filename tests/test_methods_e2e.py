"""Short end-to-end runs of every method on digits, recipes, config errors, the benchmark CLI."""
import json

import numpy as np
import pytest

from configs import digits, recipes
from experiments import digits_benchmark
from gdw_jax import methods, train
from gdw_jax.methods import transfer
from gdw_jax.validation import ConfigError, validate

ALL = ("erm", "focal", "cb", "ldam_drw", "l2rw", "mwnet", "cmwnet", "cmwnet_sl", "gdw", "absgd")


def tiny_config(method, **overrides):
  c = digits.get_config()
  c.method = method
  c.update(num_epochs=2, mlp_hidden=(16,), drop_last=True, progress=False, meta_per_class=5,
           imbalance_factor=0.3, noise_rate=0.2, eval_batch_size=500)
  c.loss.drw_epoch = 1
  c.absgd.start_epoch = 1
  c.cmwnet_sl.warmup_epochs = 1
  c.cmwnet_sl.meta_every = 3
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def test_every_public_method_name_is_registered():
  assert set(ALL) <= set(methods.names())


@pytest.mark.parametrize("method", ALL)
def test_short_run(tmp_path, method):
  final = train.train_and_evaluate(tiny_config(method), str(tmp_path))
  assert final["method"] == method and final["steps"] > 0
  assert np.isfinite(final["final_train_loss"]) and final["last_acc"] > 20.0
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)
  w = np.load(tmp_path / "sample_weights.npz")["instance_weight"]
  seen = ~np.isnan(w)  # drop_last: a few samples are not visited in an epoch
  assert seen.mean() > 0.9 and np.isfinite(w[seen]).all() and (w[seen] >= 0).all()
  if method == "cmwnet_sl":  # small-loss meta set (10 per noisy class) re-selected every epoch
    assert rows[1]["meta_set_size"] == 100 and rows[1]["meta_step"] > 0
    assert rows[0]["meta_step"] == 0.0 and rows[0]["mix_lambda"] == 1.0  # warm-up: plain ERM
    assert 0.5 <= rows[1]["mix_lambda"] < 1.0
  if method == "absgd":  # second stage from epoch 1: the weights are no longer uniform
    assert rows[0]["absgd_weight_sum"] == pytest.approx(1.0)
    assert np.nanstd(w[1]) > 1e-3


def test_small_loss_meta_set_is_cleaner_than_the_training_set(tmp_path):
  # Teacher = the current model (decay 0) so that two epochs of training are enough to rank.
  c = tiny_config("cmwnet_sl", **{"cmwnet_sl.ema_decay": 0.0, "noise_rate": 0.5,
                                  "imbalance_factor": 1.0, "num_epochs": 3})
  final = train.train_and_evaluate(c, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert rows[2]["meta_set_noisy_frac"] < final["realised_noise_rate"] / 2


def test_cmwnet_long_tail_recipe_runs_on_an_in_train_meta_set(tmp_path):
  c = tiny_config("cmwnet")
  recipes.apply(c, "cmwnet_lt")
  assert c.cmwnet.warmup_epochs == 2 and c.meta_per_class == 0
  c.num_epochs, c.cmwnet.warmup_epochs, c.lr_milestones = 3, 1, (1, 2)
  final = train.train_and_evaluate(c, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  counts = np.asarray(json.load(open(tmp_path / "data.json"))["train_class_counts_noisy"])
  assert rows[0]["meta_step"] == 0.0 and rows[1]["meta_step"] == 1.0  # ERM phase, then CMW-Net
  assert rows[2]["meta_set_size"] == 10 * counts.min()
  assert np.isfinite(final["final_train_loss"])


@pytest.mark.parametrize("name", recipes.names())
def test_recipes_validate_on_digits(name):
  c = digits.get_config(f"recipe={name}")
  validate(c)
  assert c.method in methods.names()


@pytest.mark.parametrize("key,value,message", [
    ("loss.name", "hinge", "unknown loss.name"),
    ("absgd.start_epoch", 60, "absgd.start_epoch = 60 is not before the last epoch"),
    ("absgd.lam", 0.0, "absgd.lam must be non-zero"),
    ("cmwnet.family_order", "random", "unknown cmwnet.family_order"),
    ("cmwnet_sl.second_weight", "v", "unknown cmwnet_sl.second_weight"),
    ("mwnet.normalise", "max", "unknown mwnet.normalise"),
    ("loss.cb_beta", 1.0, r"loss.cb_beta must be in \[0, 1\), got 1.0"),
    ("classifier_head", "mlp", "unknown classifier_head"),
])
def test_bad_keys_are_one_line_config_errors(key, value, message):
  method = key.split(".")[0] if key.split(".")[0] in methods.names() else "erm"
  c = digits.get_config()
  c.method = method
  node = c
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError, match=message) as err:
    validate(c)
  assert "\n" not in str(err.value)


def test_drw_needs_class_weights_and_meta_methods_need_a_meta_set():
  c = digits.get_config()
  c.method, c.loss.drw = "erm", True
  with pytest.raises(ConfigError, match="set loss.class_weights"):
    validate(c)
  c = digits.get_config()
  c.method, c.meta_per_class = "l2rw", 0
  with pytest.raises(ConfigError, match="needs a meta set"):
    validate(c)
  c.method = "cmwnet_sl"  # small-loss meta set from the training data: none held out needed
  validate(c)


def test_benchmark_lists_methods_with_recipes(tmp_path, capsys):
  out = tmp_path / "bench.json"
  rc = digits_benchmark.main(["--methods", "erm,absgd@absgd_lt", "--seeds", "1", "--epochs",
                              "3", "--noise", "none", "--imbalance", "0.2", "--json", str(out),
                              "--set", "mlp_hidden=(16,)"])
  assert rc == 0
  res = json.load(open(out))
  assert set(res) == {"erm", "absgd@absgd_lt"} and len(res["erm"]["last5_acc"]) == 1
  assert "| absgd@absgd_lt |" in capsys.readouterr().out
  assert digits_benchmark.main(["--methods", "nope"]) == 2
  assert digits_benchmark.main(["--methods", "absgd@nope"]) == 2


def test_frozen_transfer_run_needs_no_meta_set(tmp_path):
  # A net trained by one run, exported, then plugged frozen into CMW-Net-SL (as the official
  # transfer experiments do), on data without a held-out meta set.
  first = tmp_path / "first"
  train.train_and_evaluate(tiny_config("cmwnet"), str(first))
  net = str(tmp_path / "net.npz")
  transfer.export_run(str(first / "method_state.msgpack"), net)
  c = tiny_config("cmwnet_sl", meta_per_class=0)
  c.cmwnet.transfer = net
  final = train.train_and_evaluate(c, str(tmp_path / "second"))
  rows = [json.loads(l) for l in open(tmp_path / "second" / "metrics.jsonl")]
  assert np.isfinite(final["final_train_loss"]) and rows[1]["meta_step"] == 0.0
  assert "meta_set_size" not in rows[1]
  assert 0.0 < rows[1]["weight_mean"] < 1.0  # the transferred net's weights, not ones
