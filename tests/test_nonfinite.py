"""The non-finite guard: a NaN stops the run naming the step; the last good checkpoint stays."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from gdw_jax import checkpoint, guards, inputs, train, validation
from gdw_jax.data import pipeline


def test_injected_nan_stops_run_at_its_step(tmp_path, monkeypatch):
  config = digits.get_config("method=erm")
  config.num_epochs, config.mlp_hidden, config.progress = 2, (32,), False
  config.checkpoint_every_steps, config.checkpoint_best = 3, False
  bad_step = 7
  real_build = validation.build_data

  def poisoned(cfg, source=None):
    ds = real_build(cfg, source)
    k = pipeline.train_batch_indices(ds.num_train, cfg.batch_size, cfg.seed, 0, bad_step)[0]
    ds.x_pool[ds.train_indices[k]] = np.nan  # one image (the trainer reads the pool), step 7
    return ds

  monkeypatch.setattr(validation, "build_data", poisoned)
  with pytest.raises(train.NonFiniteError) as e:
    train.train_and_evaluate(config, str(tmp_path))
  msg = str(e.value)
  assert "\n" not in msg
  assert f"at step {bad_step} (epoch 0, batch {bad_step})" in msg
  assert "train_loss" in msg and "params" in msg
  assert "last good checkpoint is step 6" in msg
  assert checkpoint.steps(str(tmp_path)) == [3, 6]
  good = checkpoint.load(str(tmp_path))
  assert int(good["state"]["step"]) == 6
  for leaf in [good["state"]["params"]["Dense_0"]["kernel"], good["state"]["params"]["Dense_1"]
               ["bias"]]:
    assert np.isfinite(np.asarray(leaf)).all()
  assert not (tmp_path / "final.json").exists()
  assert (tmp_path / "metrics.jsonl").read_text() == ""  # no epoch finished
  assert json.loads((tmp_path / "config.json").read_text())["method"] == "erm"


def _fake_step(weights_value, param_value):
  def step(state, batch, meta, phase=None):
    del batch, meta, phase
    new = {"params": {"w": jnp.full((2,), param_value)}}
    return (_State(**new), {"train_loss": jnp.float32(1.0)},
            jnp.full((4, 1), weights_value))
  return step


class _State:
  def __init__(self, params):
    self.params, self.model_state, self.opt_state = params, {}, ()
    self.method_state = {"count": jnp.int32(3)}


def _block(step, finite):
  """One step's host outputs as the loop sees them (leading [steps, runs] axes)."""
  flags = {k: np.asarray(v).reshape(1, -1) for k, v in finite.items()}
  k = next(iter(flags.values())).shape[1]
  return inputs.Block(range(step, step + 1), np.zeros((1, k, 4), np.int32), {}, None, flags)


@pytest.mark.parametrize("w,p,bad", [(1.0, 0.0, []), (np.nan, 0.0, ["weights"]),
                                     (1.0, np.inf, ["params"])])
def test_flags_name_the_culprit(w, p, bad):
  _, _, _, finite = guards.with_finite_check(_fake_step(w, p))(None, None, None)
  assert sorted(k for k, ok in finite.items() if not bool(ok)) == bad
  guard = guards.FiniteGuard(steps_per_epoch=10, ckpt_dir="/ck")
  if bad:
    with pytest.raises(guards.NonFiniteError, match=rf"non-finite {bad[0]} at step 23 \(epoch 2, "
                                                    r"batch 3\).*no checkpoint was saved"):
      guard.check([_block(23, finite)])
  else:
    guard.check([_block(23, finite)])


def test_flags_of_several_runs_name_the_seed():
  finite = {"train_loss": np.array([True, True, False]), "params": np.array([True, True, True])}
  guard = guards.FiniteGuard(steps_per_epoch=10, ckpt_dir="/ck", seeds=(4, 5, 6))
  guard.last_saved = 20
  with pytest.raises(guards.NonFiniteError, match=r"non-finite train_loss at step 23 \(epoch 2, "
                     r"batch 3\) of the run with seed 6;.*last good checkpoint is step 20"):
    guard.check([_block(22, {k: np.ones(3, bool) for k in finite}), _block(23, finite)])
