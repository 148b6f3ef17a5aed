"""Streaming input through the training loop (``input_pipeline=stream``): a streamed run equals
the in-memory run on the same folder, and a streamed run stopped mid-epoch and resumed equals the
uninterrupted one (bit for bit on CPU)."""
import glob
import json
import os
import shutil
import signal

import pytest

import run_helpers as rh
from gdw_jax import checkpoint, guards, loop, runs, train
from test_stream import folder_config, write_jpegs


def _config(root, test_root, pipeline):
  """GDW (meta batches every step) on 15 training and 6 meta images of 16x16 (meta_per_class
  2 of 7 per class), batch 4: 4 steps per epoch, the last of 3 rows; saves at steps 3, 6, 8.
  Augmentation off and a fixed normalisation: the two paths see the same pixels."""
  c = folder_config(root, input_pipeline=pipeline, test_root=test_root, method="gdw",
                    model="mlp", mlp_hidden=(8,), num_epochs=2, report=False,
                    image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25),
                    checkpoint_every_steps=3, keep_checkpoints=5, checkpoint_best=False)
  if pipeline == "stream":
    c.stream_workers = 0  # worker processes take seconds to start; tests/test_stream.py has them
  return c


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  base = tmp_path_factory.mktemp("stream_loop")
  return (write_jpegs(str(base / "train")),
          write_jpegs(str(base / "test"), per_class=3, seed=1))


@pytest.fixture(scope="module")
def finished(folders, tmp_path_factory):
  """The uninterrupted runs: in memory (device-resident, compiled epochs) and streamed."""
  out = {}
  for pipeline in ("memory", "stream"):
    out[pipeline] = str(tmp_path_factory.mktemp(f"run_{pipeline}"))
    train.train_and_evaluate(_config(*folders, pipeline), out[pipeline])
  return out


def _assert_same_run(a, b):
  # label_issues.csv: the final model on the training set, by streamed evaluation
  rh.assert_same_run(a, b, same_bytes=("label_issues.csv",))


def test_streamed_run_equals_the_in_memory_run(finished):
  inputs = [json.load(open(os.path.join(finished[p], "timing.json")))["inputs"]
            for p in ("memory", "stream")]
  assert inputs == ["device", "stream"]
  final = rh.read_final(finished["stream"])
  assert final["steps"] == 8 and final["last_acc"] is not None
  _assert_same_run(finished["memory"], finished["stream"])


def test_streamed_run_stopped_mid_epoch_and_resumed_equals_the_uninterrupted_one(
    folders, finished, tmp_path, monkeypatch):
  c = _config(*folders, "stream")
  workdir = str(tmp_path / "stopped")
  # a SIGTERM seen after the first segment (steps 0..2): saved at step 3 (mid-epoch 0), stopped
  monkeypatch.setattr(guards.SignalGuard, "requested", lambda self: signal.SIGTERM)
  trainer = loop.Trainer(runs.prepare(c, workdir))
  with pytest.raises(train.Preempted):
    trainer.train()
  monkeypatch.undo()
  assert checkpoint.steps(workdir) == [3]
  assert not os.path.exists(os.path.join(workdir, "final.json"))
  train.train_and_evaluate(c, workdir)  # a new launch: the stream starts at step 3
  timing = json.load(open(os.path.join(workdir, "timing.json")))
  assert timing["steps_this_session"] == 5
  _assert_same_run(finished["stream"], workdir)


def test_stream_refuses_device_placement(folders, tmp_path):
  c = _config(*folders, "stream")
  c.data_placement = "device"
  with pytest.raises(train.ConfigError, match="data_placement=device"):
    train.train_and_evaluate(c, str(tmp_path / "refused"))
  assert not (tmp_path / "refused").exists()  # refused before anything is written


def test_a_corrupt_jpeg_skipped_while_streaming_is_listed_in_final_json(folders, finished,
                                                                      tmp_path):
  train_root = str(tmp_path / "train")
  shutil.copytree(folders[0], train_root)
  bad = sorted(glob.glob(os.path.join(train_root, "*", "*.jpg")))[1]
  with open(bad, "rb") as f:
    head = f.read()[:200]
  with open(bad, "wb") as f:
    f.write(head)  # the header reads (the table is built), the pixels do not
  c = _config(train_root, folders[1], "stream")
  c.skip_bad_images, c.checkpoint = True, False
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir)
  final = rh.read_final(workdir)
  assert list(final["bad_images"]) == [bad] and final["steps"] == 8
  assert "bad_images" not in rh.read_final(finished["stream"])  # only when there were some
