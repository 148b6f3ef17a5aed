"""Partial labels (issue 26): candidate sets, PRODEN, and their bad inputs.

The spec's checks (``../shared/specs/partial_label.md`` §9) on tiny arrays, one digits run of
PRODEN with a kill/resume, and every bad input of the issue as a one-line ConfigError raised
before anything is written."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import run_helpers as rh
from configs import digits
from gdw_jax import reweighted_grads, train
from gdw_jax.data import partial
from gdw_jax.methods import proden as proden_lib
from gdw_jax.validation import ConfigError

# ------------------------------------------------------------------------- check 1: generator


@pytest.mark.parametrize("c,q", [(10, 0.1), (10, 0.5), (100, 0.03)])
def test_binomial_generator_matches_its_distribution(c, q):
  n = 20000
  y = np.random.default_rng(1).integers(0, c, n)
  s = partial.partialize(y, c, q, "binomial", np.random.default_rng(2))
  assert s.dtype == bool and s.shape == (n, c)
  assert s[np.arange(n), y].all()
  size = s.sum(1)
  assert size.min() == 2
  expected = 1 + (c - 1) * q + (1 - q) ** (c - 1)
  assert partial.expected_size(c, q) == pytest.approx(expected)
  assert abs(size.mean() - expected) < 0.03
  # each non-true class: q + (1-q)^(C-1)/(C-1)
  other = s.copy()
  other[np.arange(n), y] = False
  rate = other.sum() / (n * (c - 1))
  assert abs(rate - (q + (1 - q) ** (c - 1) / (c - 1))) < 0.01
  # |S| = 2: exactly one Bernoulli hit, or none and the fallback (the fallback's share)
  two = (c - 1) * q * (1 - q) ** (c - 2) + (1 - q) ** (c - 1)
  assert abs(np.mean(size == 2) - two) < 0.015


def test_expected_sizes_of_the_spec():
  assert [round(partial.expected_size(10, q), 3) for q in (0.1, 0.3, 0.5, 0.7)] == [
      2.287, 3.740, 5.502, 7.300]
  assert round(partial.expected_size(100, 0.03), 3) == 4.019


def test_pair_generator_and_seeding():
  y = np.arange(5000) % 4
  s = partial.partialize(y, 4, 0.3, "pair", np.random.default_rng(0))
  assert s[np.arange(5000), y].all()
  extra = s.sum(1) - 1
  assert set(np.unique(extra)) == {0, 1}
  assert s[np.arange(5000), (y + 1) % 4][extra == 1].all()
  assert abs(extra.mean() - 0.3) < 0.03
  again = partial.partialize(y, 4, 0.3, "pair", np.random.default_rng(0))
  np.testing.assert_array_equal(s, again)  # seeded: reproducible (the official code is not)


def test_draw_member_is_uniform_over_the_set():
  mask = np.tile(np.array([[True, False, True, True]]), (30000, 1))
  y = partial.draw_member(mask, np.random.default_rng(0))
  counts = np.bincount(y, minlength=4) / 30000
  np.testing.assert_allclose(counts, [1 / 3, 0, 1 / 3, 1 / 3], atol=0.012)


# -------------------------------------------------------------- checks 2-6: PRODEN's pieces

W = np.array([[.5, .5, 0], [1 / 3, 1 / 3, 1 / 3]], np.float32)
Z = np.array([[1., 2., 0.], [0., 0., 3.]], np.float32)


def test_initial_table():
  s = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], bool)
  w = proden_lib.initial_confidence(s)
  np.testing.assert_allclose(w.sum(1), 1, atol=1e-6)
  np.testing.assert_allclose(w[0], [.5, .5, 0])
  assert w[0, 2] == 0 and w[2, 0] == 0 and w[2, 2] == 1


@pytest.mark.parametrize("log_of_softmax", [False, True])
def test_loss_against_hand_computed_value(log_of_softmax):
  loss = proden_lib.proden_loss(jnp.asarray(Z), jnp.asarray(W), log_of_softmax)
  assert float(loss) == pytest.approx(1.501264, abs=1e-5)  # (.907606 + 2.094923) / 2


def test_update_against_hand_computed_values():
  mask = jnp.asarray(W > 0)
  new = np.asarray(proden_lib.updated_confidence(jnp.asarray(Z), jnp.asarray(W), mask))
  np.testing.assert_allclose(new[0], [.268941, .731059, 0], atol=1e-6)
  np.testing.assert_allclose(new[1], [.045279, .045279, .909443], atol=1e-6)  # = p: all candidates
  assert new[0, 2] == 0.0
  np.testing.assert_allclose(new.sum(1), 1, atol=1e-6)
  shifted = proden_lib.updated_confidence(jnp.asarray(Z + 37.5), jnp.asarray(W), mask)
  np.testing.assert_allclose(shifted, new, atol=1e-6)


def test_underflow_quirks_are_options():
  # both candidates far below a non-candidate: their float32 probabilities underflow to 0
  z = jnp.asarray([[-200., -199., 5.]])
  w = jnp.asarray([[.5, .5, 0.]])
  mask = w > 0
  stable = proden_lib.updated_confidence(z, w, mask)
  np.testing.assert_allclose(stable, [[.268941, .731059, 0.]], atol=1e-6)
  sticky = proden_lib.updated_confidence(z, w, mask, zero_sticks=True)
  assert np.isnan(np.asarray(sticky)).all()  # the official 0/0
  z1 = jnp.asarray([[-200., 0., 5.]])  # one candidate underflows: dropped for good there
  sticky1 = proden_lib.updated_confidence(z1, w, mask, zero_sticks=True)
  assert float(sticky1[0, 0]) == 0.0 and float(sticky1[0, 1]) == 1.0
  z2 = jnp.asarray([[200., 0.]])  # p of the non-candidate underflows to 0
  w2 = jnp.asarray([[1., 0.]])
  assert np.isfinite(float(proden_lib.proden_loss(z2, w2)))
  assert np.isnan(float(proden_lib.proden_loss(z2, w2, log_of_softmax=True)))  # 0 * log 0


def _linear(params, model_state, x, train):
  del train
  return x @ params["w"], model_state


def test_write_back_uses_pre_step_predictions_next_epoch():
  """Two batches of 3: after epoch 0 each sample's row is its pre-step prediction over its
  candidates, written only at the visited positions; epoch 1 trains on those rows."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 4)).astype(np.float32)
  cand = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [1, 1, 0], [0, 1, 1]], bool)
  method = proden_lib.proden(candidates=cand)
  state = method.init(jax.random.PRNGKey(0))
  params = {"w": jnp.asarray(rng.normal(size=(4, 3)).astype(np.float32))}
  first = np.asarray(state["confidence"])
  idx0 = jnp.asarray([4, 0, 2])
  z_pre = x[np.asarray(idx0)] @ np.asarray(params["w"])
  grads, _, state, aux = reweighted_grads(
      method, state, _linear, params, {}, {"x": jnp.asarray(x[np.asarray(idx0)]),
                                          "y": jnp.zeros(3, jnp.int32), "index": idx0},
      lr=0.1, step=jnp.asarray(0))
  table = np.asarray(state["confidence"])
  untouched = [1, 3, 5]
  np.testing.assert_array_equal(table[untouched], first[untouched])
  p = np.exp(z_pre - z_pre.max(1, keepdims=True)) * cand[np.asarray(idx0)]
  np.testing.assert_allclose(table[np.asarray(idx0)], p / p.sum(1, keepdims=True), atol=1e-6)
  assert (table[~cand] == 0).all()
  # the gradient is that of the loss with the *old* rows: (p - w) / B through the linear model
  w_old = first[np.asarray(idx0)]
  soft = np.exp(z_pre) / np.exp(z_pre).sum(1, keepdims=True)
  expect = x[np.asarray(idx0)].T @ ((soft - w_old) / 3)
  np.testing.assert_allclose(grads["w"], expect, atol=1e-5)
  assert aux["label_estimate"].tolist() == np.argmax(table[np.asarray(idx0)], 1).tolist()


def test_estimate_lies_in_the_set_and_ties_take_the_smallest_index():
  cand = np.array([[0, 1, 1, 0], [1, 0, 0, 1]], bool)
  w = proden_lib.initial_confidence(cand)
  assert np.argmax(w, 1).tolist() == [1, 0]  # uniform rows: first maximal index, a candidate
  new = proden_lib.updated_confidence(jnp.asarray([[9., 0., 1., 9.], [0., 5., 5., -1.]]),
                                      jnp.asarray(w), jnp.asarray(cand))
  assert all(cand[i, j] for i, j in enumerate(np.argmax(new, 1)))


# -------------------------------------------------------------------------- digits, end to end


def _config(**overrides):
  c = digits.get_config("method=proden,epochs=3")
  c.mlp_hidden, c.progress, c.report = (32,), False, False
  c.partial_rate = 0.3
  for key, value in overrides.items():
    c[key] = value
  return c


def test_proden_on_digits_saves_sets_and_logs_disambiguation(tmp_path):
  full = tmp_path / "full"
  train.train_and_evaluate(_config(report=True), str(full))
  labels = np.load(full / "labels.npz")
  s, t = labels["candidates"], labels["true_labels"]
  assert s[np.arange(len(t)), t].all() and s[np.arange(len(t)), labels["noisy_labels"]].all()
  import json
  data = json.loads((full / "data.json").read_text())
  assert data["candidates"]["expected_mean_size"] == pytest.approx(3.740, abs=1e-3)
  assert data["candidates"]["mean_size"] == pytest.approx(s.sum(1).mean())
  rows = [json.loads(r) for r in (full / "metrics.jsonl").read_text().splitlines()]
  dis = [r["disambiguation_acc"] for r in rows]
  assert dis[-1] > 0.7 and dis[-1] > dis[0] + 0.1  # the uniform start: about 0.4
  assert rows[-1]["test_acc"] > 50  # chance: 10
  report = (full / "report.md").read_text()
  assert "## Partial labels (candidate sets)" in report and "expected 3.740" in report
  assert "Disambiguation accuracy" in report
  from gdw_jax.analysis import label_issues
  cols = label_issues.read_csv(str(full / "label_issues.csv"))
  assert json.loads((full / "final.json").read_text())["label_score"] == "candidates"
  assert np.all(np.diff(cols["p_outside"]) <= 1e-12)  # most mass outside the set first
  assert cols["set_misses_truth"].sum() == 0  # generated sets always hold the true label


class _Killed(Exception):
  pass


# A PRODEN run killed mid-epoch and resumed exactly: stage A of the pipeline test below.


# ------------------------------------------------------------------------------- bad inputs

X = np.random.default_rng(0).random((30, 4, 4, 1)).astype(np.float32)
Y = np.arange(30) % 3


def _npz(tmp, method="proden", **arrays):
  path = os.path.join(tmp, "d.npz")
  np.savez(path, **arrays)
  return _config(dataset="npz", data_path=path, partial_rate=0.0, method=method,
                 noise_type="none", meta_per_class=0, batch_size=10), path


def _one_hot_sets():
  s = np.zeros((30, 3), bool)
  s[np.arange(30), Y] = True
  s[np.arange(30), (Y + 1) % 3] = True
  return s


def wrong_shape(tmp):
  c, path = _npz(tmp, x_train=X, y_train=Y, candidates=_one_hot_sets()[:, :2])
  return c, [path, "candidates must be [n, C] = [30, 3]", "(30, 2)"]


def empty_row(tmp):
  s = _one_hot_sets()
  s[7] = False
  c, path = _npz(tmp, x_train=X, y_train=Y, candidates=s)
  return c, [path, "candidates: row 7 has no candidate class"]


def label_outside_set(tmp):
  s = _one_hot_sets()
  s[4, Y[4]] = False
  c, path = _npz(tmp, x_train=X, y_train=Y, candidates=s)
  return c, [path, "row 4: its given label 1 is not among its candidates"]


def csv_unknown_class(tmp):
  root = os.path.join(tmp, "imgs")
  for cls in ("a", "b", "c"):
    os.makedirs(os.path.join(root, cls))
    for i in range(4):
      Image.new("RGB", (6, 6), 128).save(os.path.join(root, cls, f"{i}.png"))
  csv = os.path.join(tmp, "labels.csv")
  with open(csv, "w") as f:
    f.write("path,label,candidates\na/0.png,a,a|b\nb/1.png,b,b|dog\n")
  c = _config(dataset="folder", data_root=root, label_csv=csv, partial_rate=0.0,
              noise_type="none", meta_per_class=0, batch_size=4)
  return c, ["label_csv", csv, "line 3", "candidate 'dog'"]


def rate_one(tmp):
  del tmp
  return _config(partial_rate=1.0), ["partial_rate must be in (0, 1)", "1.0"]


def rate_negative(tmp):
  del tmp
  return _config(partial_rate=-0.2), ["partial_rate must be in (0, 1)"]


def erm_given_generated_sets(tmp):
  del tmp
  return _config(method="erm"), ["method erm cannot use candidate sets", "partial_rate=0.3",
                                 "proden"]


def erm_given_npz_sets(tmp):
  c, _ = _npz(tmp, method="erm", x_train=X, y_train=Y, candidates=_one_hot_sets())
  return c, ["method erm cannot use candidate sets", "gives candidate sets"]


def proden_without_sets(tmp):
  del tmp
  return _config(partial_rate=0.0), ["method proden needs candidate sets", "partial_rate"]


CASES = [wrong_shape, empty_row, label_outside_set, csv_unknown_class, rate_one, rate_negative,
         erm_given_generated_sets, erm_given_npz_sets, proden_without_sets]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, case):
  config, words = case(str(tmp_path))
  work = tmp_path / "run"
  with pytest.raises(ConfigError) as e:
    train.train_and_evaluate(config, str(work))
  msg = str(e.value)
  assert "\n" not in msg
  for w in words:
    assert w in msg, f"{w!r} not in {msg!r}"
  assert not work.exists()


def test_given_sets_from_npz_and_csv_reach_the_dataset(tmp_path):
  from gdw_jax import data
  s = _one_hot_sets()
  c, _ = _npz(str(tmp_path), x_train=X, y_train=Y, candidates=s.astype(np.uint8))
  ds = data.build(c)
  np.testing.assert_array_equal(ds.candidates, s[ds.train_indices])
  assert ds.summary()["candidates"]["source"] == "given"
  c, _ = csv_unknown_class(str(tmp_path / "f"))
  with open(c.label_csv, "w") as f:
    f.write("path,label,candidates\na/0.png,a,a|b\nb/1.png,b,b|2\n")
  ds = data.build(c)
  ids = list(ds.train_ids)
  assert ds.candidates[ids.index("a/0.png")].tolist() == [True, True, False]
  assert ds.candidates[ids.index("b/1.png")].tolist() == [False, True, True]
  assert ds.candidates[ids.index("c/3.png")].tolist() == [False, False, True]  # not listed


def test_proden_resnet32_has_option_b_shortcuts_and_its_init():
  from gdw_jax import models
  from gdw_jax.models import resnet_cifar, torch_init
  m = models.get("resnet32_proden", 10)
  params, state = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  # option A's 464,154 + conv1x1 16->32, 32->64 and their BN scale/bias
  assert sum(a.size for a in jax.tree.leaves(params)) == 464154 + 512 + 64 + 2048 + 128
  assert set(params["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2", "shortcut_0", "shortcut_1"}
  assert params["layer2_0"]["shortcut_0"]["kernel"].shape == (1, 1, 16, 32)
  assert "shortcut_0" not in params["layer2_1"] and "shortcut_0" not in params["layer1_0"]
  assert "mean" in state["batch_stats"]["layer3_0"]["shortcut_1"]
  assert resnet_cifar._conv_init("B") is torch_init.kaiming_normal_fan_out
  k = np.asarray(torch_init.kaiming_normal_fan_out(jax.random.PRNGKey(1), (3, 3, 64, 64)))
  assert abs(k.std() / np.sqrt(2 / (9 * 64)) - 1) < 0.02  # N(0, 2 / (k k out_channels))
  k1 = np.asarray(torch_init.kaiming_normal_fan_out(jax.random.PRNGKey(2), (1, 1, 32, 64)))
  assert abs(k1.std() / np.sqrt(2 / 64) - 1) < 0.03


# ------------------------------------------------------------------ GDW with candidate sets


def _gdw_step(candidate_step, candidate_target="estimate"):
  import gdw_jax
  rng = np.random.default_rng(3)
  x = rng.normal(size=(8, 5)).astype(np.float32)
  cand = np.zeros((8, 4), bool)
  cand[:, :2] = True  # classes 0, 1 are the candidates of every sample; 2, 3 never
  method = gdw_jax.gdw(candidates=cand, candidate_step=candidate_step,
                       candidate_target=candidate_target, outer_lr=100.0, clip=0.2)
  state = method.init(jax.random.PRNGKey(0))
  params = {"w": jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))}
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(np.full(8, 1, np.int32)),
           "index": jnp.arange(8)}
  meta = {"x": jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32)),
          "y": jnp.asarray(rng.integers(0, 4, 6).astype(np.int32))}
  step = jax.jit(lambda state, params, batch, meta: reweighted_grads(
      method, state, _linear, params, {}, batch, meta, lr=0.5, step=jnp.asarray(0))[3])
  aux = step(state, params, batch, meta)
  z = x @ np.asarray(params["w"])
  return np.asarray(aux["weights"]), np.asarray(aux["label_estimate"]), z


def test_gdw_restricted_step_moves_only_candidate_classes():
  w, est, z = _gdw_step("restricted")
  np.testing.assert_array_equal(est, np.argmax(z[:, :2], 1))  # argmax over the candidates
  # non-candidate columns keep the tiled instance weight v_i: equal across columns 2 and 3
  np.testing.assert_allclose(w[:, 2], w[:, 3], rtol=1e-6)
  other = 1 - est  # the non-target candidate: moved by the class-level step
  assert np.abs(w[np.arange(8), other] - w[:, 2]).max() > 1e-4
  w_all, _, _ = _gdw_step("all")
  assert np.abs(w_all[:, 2] - w_all[:, 3]).max() > 1e-4  # the paper's step moves every class
  _, given, _ = _gdw_step("restricted", "given")
  np.testing.assert_array_equal(given, np.ones(8))


def test_gdw_with_generated_sets_on_digits(tmp_path):
  import json
  c = _config(method="gdw", num_epochs=2)
  train.train_and_evaluate(c, str(tmp_path / "g"))
  rows = [json.loads(r) for r in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
  assert all(0 <= r["disambiguation_acc"] <= 1 for r in rows) and rows[-1]["test_acc"] > 30
  assert np.isfinite(rows[-1]["meta_loss"])


# ------------------------------------------------- PRODEN -> CMW-Net (spec checks 6-10, resume)


def test_pseudo_labels_are_candidates_and_ties_take_the_smallest_index():
  from gdw_jax import pll_pipeline
  cand = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 1]], bool)
  w = proden_lib.initial_confidence(cand)  # epoch 0: uniform rows, all ties
  assert pll_pipeline.pseudo_labels(w).tolist() == [1, 0, 2]
  w2 = np.array([[0, .2, .8, 0], [.6, 0, 0, .4], [0, 0, .5, .5]], np.float32)
  y = pll_pipeline.pseudo_labels(w2)
  assert y.tolist() == [2, 0, 2] and cand[np.arange(3), y].all()


def test_meta_set_is_the_10_smallest_losses_of_each_pseudo_class():
  from gdw_jax.methods import cmwnet
  rng = np.random.default_rng(0)
  yhat = np.repeat(np.arange(3), 30)
  rng.shuffle(yhat)
  loss = rng.random(90)
  picked = cmwnet.small_loss_subset(loss, yhat, 10)
  assert len(picked) == 30
  for k in range(3):
    mine = picked[yhat[picked] == k]
    assert len(mine) == 10
    assert set(mine) == set(np.flatnonzero(yhat == k)[np.argsort(loss[yhat == k])[:10]])


def test_weighted_loss_and_its_gradient_through_the_numerator_only():
  from gdw_jax.methods import weight_net
  l = jnp.asarray([.407606, .094923])
  v = jnp.asarray([.8, .2])

  def objective(v):
    return jnp.sum(v * l) / jax.lax.stop_gradient(jnp.sum(v))

  assert float(objective(v)) == pytest.approx(.345069, abs=1e-6)
  np.testing.assert_allclose(jax.grad(objective)(v), l / 1.0, atol=1e-6)  # d/dv: l_i / sum v
  # the library's virtual-step coefficients of that objective: dF/dl_i = v_i / stopgrad(sum v)
  c = weight_net.virtual_coefficients(lambda x: jnp.where(x > .3, .8, .2), l, "sum_detached")
  np.testing.assert_allclose(c[:, 0], [.8, .2], atol=1e-6)


def test_stage_c_schedule_lr_and_meta_steps():
  from configs import common, recipes
  from gdw_jax import methods, optim
  c = common.base_config()
  c.num_epochs, c.batch_size = 120, 256
  recipes.apply(c, "proden_cmwnet_stage_c")
  sched = optim.lr_schedule(c, 196)
  lrs = [float(sched(e * 196)) for e in (79, 80, 100)]
  np.testing.assert_allclose(lrs, [0.1, 0.01, 0.001], rtol=1e-6)
  info = methods.DataInfo(10, 50000, np.full(10, 5000), 196)
  m = methods.get("cmwnet")(c, info)
  epoch = 50 * 196  # past the 45-epoch warm-up
  meta = [i for i in range(196) if m.phase(epoch + i) == 2]
  assert meta == list(range(0, 196, 20)) and len(meta) == 10
  assert m.phase(44 * 196) == 0 and m.phase(45 * 196 + 1) == 1


def _pipeline_config(**overrides):
  c = _config(num_epochs=3, batch_size=133, checkpoint_every_steps=5, checkpoint_best=False)
  c.pll.pseudo_label_epoch, c.pll.stage_a_recipe = 2, ""
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.fixture(scope="module")
def pipeline_full(tmp_path_factory):
  from gdw_jax import pll_pipeline
  workdir = tmp_path_factory.mktemp("pll") / "full"
  return workdir, pll_pipeline.run(_pipeline_config(), str(workdir))


def test_pipeline_records_each_stage(pipeline_full):
  workdir, out = pipeline_full
  pseudo = np.load(workdir / "stage_b" / "pseudo_labels.npz")
  conf = np.load(workdir / "stage_a" / "confidence.npz")
  np.testing.assert_array_equal(pseudo["pseudo_labels"], np.argmax(conf["confidence"], 1))
  correct = int(np.sum(pseudo["pseudo_labels"] == pseudo["true_labels"]))
  assert out["stage_b"]["num_correct"] == correct > 0.5 * len(pseudo["true_labels"])
  import json
  data_c = json.loads((workdir / "stage_c" / "data.json").read_text())
  assert "candidates" not in data_c  # stage C: pseudo-labels as given labels
  assert data_c["realised_noise_rate"] == pytest.approx(1 - correct / len(pseudo["true_labels"]))
  rows = [json.loads(r) for r in (workdir / "stage_c" / "metrics.jsonl").read_text().splitlines()]
  assert [r["meta_set_size"] for r in rows] == [100] * 3  # 10 per pseudo-class, every epoch
  assert out["stage_c"]["method"] == "cmwnet" and out["stage_a"]["method"] == "proden"


def test_pipeline_killed_in_each_stage_resumes_to_the_same_end(tmp_path, monkeypatch,
                                                               pipeline_full):
  """Killed mid stage A (step 7), then right after stage B, then mid stage C (step 12): each
  time the same command resumes; the end equals the uninterrupted pipeline."""
  from gdw_jax import pll_pipeline
  from gdw_jax.data import pipeline as batches
  full, _ = pipeline_full
  killed = tmp_path / "killed"
  real_indices, real_train, real_b = (batches.train_batch_indices, train.train_and_evaluate,
                                      pll_pipeline.stage_b)
  where = {}

  def tracked(config, workdir):
    where["stage"] = os.path.basename(workdir)
    return real_train(config, workdir)

  def kill_at(stage, step):
    def indices(n, batch_size, seed, epoch, s):
      if where.get("stage") == stage and epoch * 10 + s == step:
        raise _Killed()
      return real_indices(n, batch_size, seed, epoch, s)
    return indices

  monkeypatch.setattr(pll_pipeline.train, "train_and_evaluate", tracked)
  monkeypatch.setattr(batches, "train_batch_indices", kill_at("stage_a", 7))
  with pytest.raises(_Killed):
    pll_pipeline.run(_pipeline_config(), str(killed))
  assert not (killed / "stage_b").exists()

  def b_then_kill(workdir):
    real_b(workdir)
    raise _Killed()

  monkeypatch.setattr(batches, "train_batch_indices", real_indices)
  monkeypatch.setattr(pll_pipeline, "stage_b", b_then_kill)
  with pytest.raises(_Killed):
    pll_pipeline.run(_pipeline_config(), str(killed))
  assert (killed / "stage_b" / "summary.json").exists() and not (killed / "stage_c").exists()
  monkeypatch.setattr(pll_pipeline, "stage_b", real_b)
  monkeypatch.setattr(batches, "train_batch_indices", kill_at("stage_c", 12))
  with pytest.raises(_Killed):
    pll_pipeline.run(_pipeline_config(), str(killed))
  monkeypatch.setattr(batches, "train_batch_indices", real_indices)
  pll_pipeline.run(_pipeline_config(), str(killed))
  for stage in ("stage_a", "stage_c"):
    rh.assert_same_run(str(full / stage), str(killed / stage),
                       same_bytes=("method_state.msgpack", "labels.npz"))
  for name in ("stage_b/pseudo_labels.npz", "stage_b/label_file.npy", "stage_a/confidence.npz"):
    assert (full / name).read_bytes() == (killed / name).read_bytes(), name


def test_label_issues_rank_sets_by_the_model_mass_outside_them():
  from gdw_jax.analysis import label_issues
  cand = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]], bool)
  probs = np.array([[.45, .45, .1], [.7, .2, .1], [.1, .8, .1], [.2, .3, .5]])
  cols = label_issues.table(ids=["a", "b", "c", "d"], given=[0, 1, 2, 0], pred=probs.argmax(1),
                            p_given=probs[np.arange(4), [0, 1, 2, 0]], label_score="candidates",
                            true_labels=[1, 0, 1, 2], candidates=cand, probs=probs)
  # mass inside: a .9, b .3, c .2, d 1.0 -> c, b, a, d
  assert cols["id"].tolist() == ["c", "b", "a", "d"]
  np.testing.assert_allclose(cols["p_outside"], [.8, .7, .1, 0.], atol=1e-12)
  assert cols["candidates"].tolist() == ["0|2", "1|2", "0|1", "0|1|2"]
  assert cols["set_misses_truth"].tolist() == [1, 1, 0, 0]
  assert label_issues.detection(cols["score"], cols["set_misses_truth"])["auroc"] == 1.0


@pytest.mark.parametrize("key,value,words", [
    ("partial_rate", 0.0, "needs generated candidate sets"),
    ("imbalance_factor", 0.5, "drop imbalance_factor"),
    ("seeds", (0, 1), "one seed per launch"),
])
def test_pipeline_bad_input_is_refused_before_anything_is_written(tmp_path, key, value, words):
  from gdw_jax import pll_pipeline
  c = _pipeline_config()
  c[key] = value
  with pytest.raises(ConfigError, match=words):
    pll_pipeline.run(c, str(tmp_path / "p"))
  assert not (tmp_path / "p").exists()
