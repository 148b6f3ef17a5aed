"""The new CIFAR recipes end to end on a small synthetic python archive: CMW-Net's PMD / hybrid
protocol (label file + noise on top, warm restarts, meta steps) and ABSGD's label-noise protocol
(SCE-CNN, clipping, L2 groups, asym by ABSGD's generator)."""
import json

import numpy as np

from configs import cifar as cifar_config
from gdw_jax import train
from tests import cifar_fixtures as fx


def test_cmwnet_fd_hybrid_run(tmp_path):
  """The protocol's data and schedule (the method itself is exercised on digits by
  test_methods_e2e): ERM under ``cmwnet_fd`` on a small MLP."""
  path, _, y, _, _ = fx.make_python_archive(str(tmp_path), "cifar10", n_train=200, seed=5)
  pmd = (y[:180] + (np.arange(180) % 3 == 0)) % 10     # PLC format: the first 90% of the images
  np.save(tmp_path / "pmd.npy", pmd.astype(np.int64))
  c = cifar_config.get_config(f"method=cmwnet_sl,archive={path},label_file={tmp_path}/pmd.npy,"
                              f"hybrid=true,noise=asym,rate=0.5")
  assert (c.recipe, c.asym_generator, c.lr_schedule) == ("cmwnet_fd", "plc", "cosine_restarts")
  c = cifar_config.get_config(f"method=erm,recipe=cmwnet_fd,archive={path},"
                              f"label_file={tmp_path}/pmd.npy,hybrid=true,noise=asym,rate=0.5")
  c.update(model="mlp", mlp_hidden=(16,), num_epochs=3, lr_restart_epoch=1, lr_restart_period=2,
           lr_restart_mult=1, batch_size=60, progress=False, report=False, checkpoint=False)
  final = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert final["steps"] == 9 and np.isfinite(final["final_train_loss"])
  labels = np.load(tmp_path / "run" / "labels.npz")
  noisy, idx = labels["noisy_labels"], labels["train_indices"]
  assert idx.shape[0] == 180                            # the pool is the file's 180 images
  moved = noisy != pmd[idx]                             # asym on top of the given labels
  src = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
  assert moved.any() and all(src[g] == n for g, n in zip(pmd[idx][moved], noisy[moved]))
  summary = json.load(open(tmp_path / "run" / "data.json"))
  assert summary["realised_noise_rate"] == np.mean(noisy != labels["true_labels"])
  lrs = [json.loads(line)["lr"] for line in open(tmp_path / "run" / "metrics.jsonl")]
  # constant before epoch 1, then cycles of 2 epochs: 0.1, then 1e-4 + (0.1 - 1e-4) / 2
  np.testing.assert_allclose(lrs, [0.1, 0.1, 0.05005], rtol=1e-5)


def test_absgd_noise_recipe_run(tmp_path):
  path = fx.make_python_archive(str(tmp_path), "cifar10", n_train=120, seed=6)[0]
  c = cifar_config.get_config(f"method=absgd,archive={path},noise=asym,rate=0.4")
  assert (c.model, c.grad_clip_norm, c.weight_decay_overrides) == ("sce_cnn", 5.0, "fc1:0.01")
  # a small MLP instead of the SCE-CNN (tested in test_resnet34), its first layer as the group
  c.update(model="mlp", mlp_hidden=(16,), weight_decay_overrides="Dense_0:0.01", num_epochs=2,
           batch_size=40, progress=False, report=False, checkpoint=False)
  c.absgd.start_epoch = 1
  final = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert np.isfinite(final["final_train_loss"])
  labels = np.load(tmp_path / "run" / "labels.npz")
  true, noisy = labels["true_labels"], labels["noisy_labels"]
  for s, t in ((9, 1), (2, 0), (4, 7)):                 # ABSGD: exactly int(0.4 n_s) per class
    assert np.sum((true == s) & (noisy == t)) == int(0.4 * np.sum(true == s))
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert rows[0]["absgd_lambda"] == 200.0 and rows[1]["absgd_lambda"] == -2.0
  # with the 1/B floor the weights sum to more than 1 once lambda < 200
  assert rows[1]["absgd_weight_sum"] > 1.0
