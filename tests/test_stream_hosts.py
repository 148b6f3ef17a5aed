"""Streaming input with several processes: two hosts (one device each), each decoding only its
half of every training batch, train the same run as one process with two devices; and as one
process streaming on one device (up to float32 reduction order).

Fake CPU devices and ``jax.distributed`` need fresh interpreters, so every run is a subprocess.
"""
import numpy as np
import pytest

import run_helpers as rh
from test_parallel import _free_port
from test_stream import write_jpegs

# GDW (a meta batch every step), 24 images of 3 classes, 2 per class trusted: 18 training
# images, batches of 6 (3 per device), 3 steps per epoch, 2 epochs.
STREAM = dict(dataset="folder", noise_type="none", noise_rate=0.0, meta_from_train=True,
              meta_per_class=2, image_size=16, batch_size=6, meta_batch_size=6, method="gdw",
              model="mlp", mlp_hidden=[8], mlp_batch_norm=True, num_epochs=2, report=False,
              image_mean=[0.5] * 3, image_std=[0.25] * 3, input_pipeline="stream",
              stream_workers=0, checkpoint_every_steps=0, drop_last=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("stream_hosts")
  config = dict(STREAM, data_root=write_jpegs(str(root / "train"), per_class=8),
                test_root=write_jpegs(str(root / "test"), per_class=3, seed=1))
  port = _free_port()
  hosts = [dict(config, distributed=True, coordinator_address=f"localhost:{port}",
                num_processes=2, process_id=i) for i in range(2)]
  procs = {"host0": rh.start(hosts[0], root / "hosts", devices=1),
           "host1": rh.start(hosts[1], root / "hosts", devices=1),
           "two": rh.start(config, root / "two", devices=2),
           "one": rh.start(config, root / "one", devices=1)}
  results = {k: rh.finish(p) for k, p in procs.items()}
  for name, (rc, out, err) in results.items():
    assert rc == 0, f"{name} failed ({rc}):\n{out}\n{err[-3000:]}"
  return root


def _same(a, b, atol):
  fa, fb = rh.read_final(a), rh.read_final(b)
  assert fa["steps"] == fb["steps"] == 6
  for ra, rb in zip(rh.read_rows(a), rh.read_rows(b), strict=True):
    assert ra["test_acc"] == rb["test_acc"]
    for k in ("train_loss", "meta_loss", "test_loss", "weight_mean", "weight_std"):
      assert abs(ra[k] - rb[k]) <= atol, (k, ra[k], rb[k])
  np.testing.assert_allclose(np.load(a / "sample_weights.npz")["instance_weight"],
                             np.load(b / "sample_weights.npz")["instance_weight"], atol=atol)
  np.testing.assert_array_equal(np.load(a / "predictions.npz")["test_pred"],
                                np.load(b / "predictions.npz")["test_pred"])
  return fa, fb


def test_two_streaming_hosts_train_the_run_of_one_process_with_two_devices(runs):
  hosts, two = _same(runs / "hosts", runs / "two", atol=1e-6)
  assert (hosts["num_processes"], hosts["num_devices"]) == (2, 2)
  assert (two["num_processes"], two["num_devices"]) == (1, 2)
  timing = rh.read_json(runs / "hosts" / "timing.json")
  assert timing["inputs"] == "stream"


def test_two_streaming_hosts_match_one_device(runs):
  _same(runs / "hosts", runs / "one", atol=1e-4)
