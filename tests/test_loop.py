"""The loop's two batch providers (compiled chunks on device-resident data, and the per-step
host path) give bit-identical runs; a resumed epoch's timing counts the whole epoch; which
provider ``data_placement=auto`` picks."""
import json
import os
import shutil

import jax
import pytest

import run_helpers as rh
from configs import digits
from gdw_jax import checkpoint, loop, train
from gdw_jax import inputs as inputs_lib
from gdw_jax import runs as runs_lib
from gdw_jax.data import pipeline


def _config(method, **kw):
  c = digits.get_config(f"method={method}")
  c.update(num_epochs=2, mlp_hidden=(16,), progress=False, report=False, **kw)
  return c


def _files_equal(a, b):
  rh.assert_same_run(a, b, same_bytes=("method_state.msgpack",))


# gdw: BN, the epoch's smaller last batch (1197 = 11 x 100 + 97), chunks cut by checkpoints.
# cmwnet_sl: static phases (ERM warm-up, meta every 3rd step), a small-loss meta set picked by
# the method at every epoch start, mixup inside the step, per-sample memory (batch index).
@pytest.mark.parametrize("method,extra", [
    ("gdw", dict(mlp_batch_norm=True, checkpoint_every_steps=5)),
    ("cmwnet_sl", dict(steps_per_call=4, meta_per_class=5)),
])
def test_compiled_epochs_equal_the_per_step_loop_bit_for_bit(tmp_path, method, extra):
  c = _config(method, **extra)
  if method == "cmwnet_sl":
    c.cmwnet_sl.warmup_epochs, c.cmwnet_sl.meta_every = 1, 3
  dirs = {}
  for placement in ("device", "host"):
    c.data_placement = placement
    dirs[placement] = str(tmp_path / placement)
    train.train_and_evaluate(c, dirs[placement])
  timing = [json.load(open(os.path.join(d, "timing.json"))) for d in dirs.values()]
  assert [t["inputs"] for t in timing] == ["device", "host"]
  _files_equal(dirs["device"], dirs["host"])


def test_resumed_epoch_counts_its_time_before_the_resume(tmp_path, monkeypatch):
  """A clock that ticks once per training batch asked for: an uninterrupted run and one
  resumed mid-epoch from step 14 must log the same epoch times (9 steps each, 1 step/s)."""
  ticks = [0]
  real = pipeline.train_batch_indices

  def counted(*args):
    ticks[0] += 1
    return real(*args)

  monkeypatch.setattr(pipeline, "train_batch_indices", counted)
  monkeypatch.setattr(loop, "clock", lambda: float(ticks[0]))
  c = _config("erm", batch_size=133, checkpoint_every_steps=7, checkpoint_best=False,
              keep_checkpoints=5)  # 9 steps per epoch; saves at 7, 14, 18
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  train.train_and_evaluate(c, full)
  shutil.copytree(full, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "18"))
  os.remove(os.path.join(resumed, "final.json"))
  assert checkpoint.steps(resumed) == [7, 14]
  ticks[0] = 0  # a new session's clock
  train.train_and_evaluate(c, resumed)
  rows_full, rows_resumed = rh.read_rows(full), rh.read_rows(resumed)
  assert [(r["epoch_time_s"], r["steps_per_s"]) for r in rows_full] == [(9.0, 1.0)] * 2
  assert rows_resumed == rows_full  # timing fields included



@pytest.mark.parametrize("model,inputs", [("mlp", "device"), ("cnn", "host")])
def test_auto_placement_keeps_convolutions_out_of_cpu_loops(model, inputs, tmp_path):
  """On CPU, ``data_placement=auto`` gives an MLP compiled chunks and a model with convolutions
  the per-step path (its conv gradients run ~20x slower inside the chunk's loop)."""
  prepared = runs_lib.prepare(_config("erm", model=model), str(tmp_path))
  assert jax.default_backend() == "cpu"
  assert inputs_lib.choose_inputs(prepared, step_fn=None).name == inputs
