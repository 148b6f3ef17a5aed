"""Data parallelism: 1 device == 4 devices == 2 hosts x 2 devices (also when stopped by a SIGTERM
on one host and resumed), and the batch policy; several seeds: 4 seeds on 4 devices (one run
each) and 2 seeds on 2 x 2 devices == 4 seeds on 1 device.

Fake CPU devices need XLA_FLAGS before jax starts, so every run here is a subprocess.
"""
import socket

import jax
import numpy as np
import pytest

import run_helpers as rh
from gdw_jax import checkpoint

# BN over the global batch, GDW's meta gradient and sum|g| normalisation over the global batch.
# drop_last: 1197 training samples leave a last batch of 97, which 4 devices cannot split.
CONFIG = dict(method="gdw", num_epochs=2, mlp_hidden=[64], mlp_batch_norm=True, drop_last=True,
              checkpoint_every_steps=0)

PROBE = r"""
import numpy as np, jax, jax.numpy as jnp
from configs import digits
from gdw_jax import guards, parallel, runs, train_step
assert jax.device_count() == 4
config = digits.get_config("method=erm")
config.drop_last = True
mesh = parallel.make_mesh(config)
x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
idx = np.random.default_rng(0).permutation(40)[:8]
b = parallel.global_rows({"x": x}, idx, parallel.batch_sharding(mesh))["x"]
shards = sorted(b.addressable_shards, key=lambda s: s.index[0].start)
assert [s.data.shape for s in shards] == [(2, 3)] * 4, [s.data.shape for s in shards]
np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]), x[idx])
odd = parallel.global_rows({"x": x}, idx[:7], mesh=mesh)["x"]   # 7 rows: replicated
assert odd.sharding.is_fully_replicated
ds, info, model, method, schedule, tx = runs.setup(config)
state = train_step.create_train_state(jax.random.PRNGKey(0), model, method, tx, ds.x_train[:2])
state = parallel.put_replicated(jax.device_get(state), mesh)
step = jax.jit(guards.with_finite_check(train_step.make_train_step(model, method, tx, schedule)),
               out_shardings=parallel.replicated(mesh))
batch = parallel.global_rows({"x": ds.x_train, "y": ds.y_train, "y_true": ds.y_train_true},
                             np.arange(100), parallel.batch_sharding(mesh))
hlo = step.lower(state, batch, None).compile().as_text()
assert "all-reduce" in hlo
evaluate = train_step.make_eval_fn(model, 30, mesh)   # batches of 32 (padded), last one 20 + 12 pad
res = evaluate(state.params, state.model_state, ds.x_test[:50], ds.y_test[:50])
ref = train_step.make_eval_fn(model, 1000)(jax.device_get(state.params), {}, ds.x_test[:50],
                                      ds.y_test[:50])
np.testing.assert_array_equal(res["pred"], ref["pred"])
assert abs(res["loss"] - ref["loss"]) < 1e-5
print("PROBE_OK")
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """All runs at once (the machine's cores are shared between them)."""
  root = tmp_path_factory.mktemp("parallel")
  port = _free_port()
  hosts = [dict(CONFIG, distributed=True, coordinator_address=f"localhost:{port}",
                num_processes=2, process_id=i) for i in range(2)]
  # The same 2 hosts with calls of 4 steps; host 0 alone gets a SIGTERM when asking for step
  # 5's batch: both must stop after step 8 (the end of that call) and save it together.
  sig_port = _free_port()
  sig_hosts = [dict(h, coordinator_address=f"localhost:{sig_port}", steps_per_call=4)
               for h in hosts]
  procs = {
      "sig0": rh.start(sig_hosts[0], root / "sig", devices=2, signal_at=5),
      "sig1": rh.start(sig_hosts[1], root / "sig", devices=2),
      "one": rh.start(CONFIG, root / "one", devices=1),
      "four": rh.start(CONFIG, root / "four", devices=4),
      "host0": rh.start(hosts[0], root / "hosts", devices=2),
      "host1": rh.start(hosts[1], root / "hosts", devices=2),
      "bad_batch": rh.start(dict(CONFIG, drop_last=False), root / "bad", devices=4),
      "seeds_one": rh.start(dict(CONFIG, seeds=[0, 1, 2, 3]), root / "seeds_one", devices=1),
      "seeds_four": rh.start(dict(CONFIG, seeds=[0, 1, 2, 3]), root / "seeds_four", devices=4),
      "seeds_2x2": rh.start(dict(CONFIG, seeds=[0, 1]), root / "seeds_2x2", devices=4),
      "probe": rh.python(PROBE, devices=4),
  }
  results = {k: rh.finish(p) for k, p in procs.items()}
  resumed = []
  if all(results[h][0] == 128 + 15 for h in ("sig0", "sig1")):
    results["sig_steps"] = checkpoint.steps(str(root / "sig"))
    resumed = [rh.start(h, root / "sig", devices=2) for h in sig_hosts]
  if all(results[h][0] == 0 for h in ("host0", "host1")):
    # both hosts again on the finished workdir: a collective restore, then the final files
    first = rh.read_final(root / "hosts")
    again = [rh.start(h, root / "hosts", devices=2) for h in hosts]
    results["rerun0"], results["rerun1"] = [rh.finish(p) for p in again]
    results["hosts_first_final"] = first
  if resumed:
    results["sig_resumed0"], results["sig_resumed1"] = [rh.finish(p) for p in resumed]
  return root, results


def _ok(results, name):
  rc, out, err = results[name]
  assert rc == 0, f"{name} failed ({rc}):\n{out}\n{err[-3000:]}"


def _compare(a, b):
  fa, fb = rh.read_final(a), rh.read_final(b)
  for k in ("last_acc", "best_acc", "best_epoch", "last5_acc", "steps"):
    assert fa[k] == fb[k], k
  assert abs(fa["final_train_loss"] - fb["final_train_loss"]) < 1e-4
  for ra, rb in zip(rh.read_rows(a), rh.read_rows(b)):
    assert ra["test_acc"] == rb["test_acc"]
    for k in ("train_loss", "meta_loss", "test_loss", "weight_mean", "weight_noisy_mean"):
      assert abs(ra[k] - rb[k]) < 1e-4, k
  wa, wb = np.load(a / "sample_weights.npz"), np.load(b / "sample_weights.npz")
  np.testing.assert_allclose(wa["instance_weight"], wb["instance_weight"], atol=1e-4)
  np.testing.assert_array_equal(np.load(a / "predictions.npz")["test_pred"],
                                np.load(b / "predictions.npz")["test_pred"])
  return fa, fb


def test_four_devices_match_one(runs):
  root, results = runs
  _ok(results, "one")
  _ok(results, "four")
  one, four = _compare(root / "one", root / "four")
  assert (one["num_devices"], four["num_devices"]) == (1, 4)


def test_two_hosts_match_one(runs):
  root, results = runs
  _ok(results, "one")
  _ok(results, "host0")
  _ok(results, "host1")
  one, hosts = _compare(root / "one", root / "hosts")
  assert (hosts["num_devices"], hosts["num_processes"]) == (4, 2)
  # orbax wrote the checkpoints collectively; they load and hold the same model
  assert checkpoint.steps(str(root / "hosts"))[-1] == 22
  a, b = checkpoint.load(str(root / "one")), checkpoint.load(str(root / "hosts"))
  for x, y in zip(jax.tree.leaves(a["state"]["params"]), jax.tree.leaves(b["state"]["params"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-4)
  # the rerun restored the final checkpoint on both hosts and rewrote the same results
  _ok(results, "rerun0")
  _ok(results, "rerun1")
  assert rh.without_timing(results["hosts_first_final"]) == \
      rh.without_timing(rh.read_final(root / "hosts"))
  assert checkpoint.steps(str(root / "hosts"))[-1] == 22


def test_sigterm_on_one_of_two_hosts_stops_both_at_one_step_and_resumes_exactly(runs):
  root, results = runs
  stopped = "gdw_jax: stopped by SIGTERM at step 8 (epoch 0.73); run the same command again"
  for name in ("sig0", "sig1"):
    rc, _, err = results[name]
    assert rc == 128 + 15, f"{name} ({rc}):\n{err[-3000:]}"
    assert err.splitlines()[-1].startswith(stopped), err[-3000:]
  assert results["sig_steps"] == [8]  # saved by both hosts, collectively
  _ok(results, "sig_resumed0")
  _ok(results, "sig_resumed1")
  _ok(results, "host0")
  a, b = root / "hosts", root / "sig"
  assert rh.without_timing(rh.read_final(a)) == rh.without_timing(rh.read_final(b))
  assert [rh.without_timing(r) for r in rh.read_rows(a)] == \
      [rh.without_timing(r) for r in rh.read_rows(b)]
  np.testing.assert_array_equal(np.load(a / "sample_weights.npz")["instance_weight"],
                                np.load(b / "sample_weights.npz")["instance_weight"])
  ca, cb = checkpoint.load(str(a)), checkpoint.load(str(b))
  assert int(ca["state"]["step"]) == int(cb["state"]["step"]) == 22
  for x, y in zip(jax.tree.leaves(ca["state"]), jax.tree.leaves(cb["state"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_four_seeds_on_four_devices_match_one_device(runs):
  root, results = runs
  for name in ("seeds_one", "seeds_four", "seeds_2x2"):
    _ok(results, name)
  for s in range(4):  # mesh (seeds 4, data 1): one run per device
    one, four = _compare(root / "seeds_one" / f"seed_{s}", root / "seeds_four" / f"seed_{s}")
    assert (one["num_devices"], four["num_devices"], four["seed"]) == (1, 4, s)
  for s in range(2):  # mesh (seeds 2, data 2): each run's batch split over two devices
    _compare(root / "seeds_one" / f"seed_{s}", root / "seeds_2x2" / f"seed_{s}")


def test_last_batch_that_does_not_divide_is_an_error(runs):
  root, results = runs
  rc, out, _ = results["bad_batch"]
  assert rc == 2
  line = out.strip().splitlines()[-1]
  assert "last batch has 97 samples" in line and "drop_last=True" in line
  assert not (root / "bad").exists()


def test_sharding_probe(runs):
  _, results = runs
  _ok(results, "probe")
  assert "PROBE_OK" in results["probe"][1]
