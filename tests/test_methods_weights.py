"""Documented properties of each method's weights (L2RW, ABSGD, CMW-Net, MW-Net variants)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from gdw_jax import bilevel, methods, models
from gdw_jax.methods import absgd, cmwnet, l2rw, weight_net
from gdw_jax.models.mlp import MLP


# ----------------------------------------------------------------------------------------- L2RW

def test_l2rw_normalisation_clips_and_guards_zero_sum():
  w = l2rw.normalised_weights(jnp.array([[-3.0], [1.0], [-1.0], [0.0]]))
  np.testing.assert_allclose(w[:, 0], [0.75, 0.0, 0.25, 0.0])
  zero = l2rw.normalised_weights(jnp.array([[1.0], [2.0], [0.0]]))
  assert not np.isnan(np.asarray(zero)).any()
  np.testing.assert_array_equal(zero, np.zeros((3, 1)))


def _tiny_ctx(lr=0.5, n=6, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, 4)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, n))
  model = models.functional(MLP(3, hidden=(5,)))
  params, ms = model.init(jax.random.PRNGKey(0), x)
  logits, _ = model.apply(params, ms, x, True)
  return bilevel.StepContext(apply_fn=model.apply, params=params, model_state=ms, x=x, labels=y,
                             logits=logits, lr=jnp.asarray(lr), meta_x=x[:4], meta_y=y[:4],
                             step=jnp.asarray(0))


def test_l2rw_weights_nonnegative_normalised_and_zero_when_no_signal():
  c = digits.get_config()
  method = methods.get("l2rw")(c, methods.DataInfo(3, 6, np.ones(3), 1))
  g, _, aux = method.update(_tiny_ctx(), {})
  w = np.asarray(aux["weights"])[:, 0] / 6
  assert (w >= 0).all() and w.sum() == pytest.approx(1.0, rel=1e-5)
  # lr = 0: the meta gradient vanishes, every weight is 0 and so is the update (no NaN).
  g0, _, aux0 = method.update(_tiny_ctx(lr=0.0), {})
  assert not np.isnan(np.asarray(g0)).any() and float(jnp.abs(g0).sum()) == 0.0
  assert float(aux0["zero_weight_steps"]) == 1.0


# ---------------------------------------------------------------------------------------- ABSGD

def test_absgd_weights_sum_to_one_over_abalpha_in_steady_state():
  rng = np.random.default_rng(0)
  log_u = jnp.asarray(-jnp.inf)
  sums = []
  for t in range(300):
    loss = jnp.asarray(rng.gamma(2.0, 0.5, size=64), jnp.float32)
    p, log_u = absgd.absgd_weights(loss, log_u, lam=2.0, gamma=0.3, ab_alpha=0.5)
    sums.append(float(p.sum()))
  assert sums[0] == pytest.approx(1 / (0.3 * 0.5), rel=1e-5)  # official u_0 = 0 transient
  assert np.mean(sums[100:]) == pytest.approx(2.0, rel=0.03)


def test_absgd_is_stable_in_log_space_and_orders_weights_by_sign_of_lambda():
  loss = jnp.array([0.0, 500.0, 1000.0])  # exp(1000) overflows float32 and float64
  p, log_u = absgd.absgd_weights(loss, jnp.asarray(-jnp.inf), lam=1.0, gamma=1.0, ab_alpha=1.0)
  assert np.isfinite(np.asarray(p)).all() and np.isfinite(float(log_u))
  # softmax(l / lam), up to float32 rounding of l / lam ~ 1e3
  np.testing.assert_allclose(p, [0.0, np.exp(-500.0), 1.0], rtol=1e-4, atol=1e-30)
  p_neg, _ = absgd.absgd_weights(loss, jnp.asarray(-jnp.inf), lam=-1.0, gamma=1.0, ab_alpha=1.0)
  assert float(p_neg[0]) == pytest.approx(1.0) and float(p_neg[2]) == 0.0
  p_floor, _ = absgd.absgd_weights(loss, jnp.asarray(-jnp.inf), lam=-1.0, gamma=1.0,
                                   ab_alpha=1.0, uniform_floor=True)
  np.testing.assert_allclose(p_floor, np.asarray(p_neg) + 1 / 3, rtol=1e-6)


def test_absgd_two_stages_switch_by_epoch():
  c = digits.get_config()
  c.absgd.update(lam=1.0, init_lam=200.0, start_epoch=2, gamma=0.5, ab_alpha=0.5)
  method = methods.get("absgd")(c, methods.DataInfo(3, 6, np.ones(3), 10))
  ctx = _tiny_ctx()
  state = method.init(None)
  _, s1, aux1 = method.update(ctx, state)  # step 0: plain mean, u untouched
  np.testing.assert_allclose(aux1["weights"], np.ones((6, 1)), rtol=1e-6)
  assert not bool(s1["started"]) and np.isfinite(float(s1["log_u"]))  # u = 0, kept finite
  late = bilevel.StepContext(**{**ctx.__dict__, "step": jnp.asarray(20)})
  _, s2, aux2 = method.update(late, s1)
  w = np.asarray(aux2["weights"])[:, 0]
  assert bool(s2["started"]) and np.isfinite(float(s2["log_u"]))
  assert w.sum() / 6 == pytest.approx(1 / (0.5 * 0.5), rel=1e-5)
  loss = np.asarray(-jax.nn.log_softmax(ctx.logits)[np.arange(6), np.asarray(ctx.labels)])
  assert (np.argsort(w) == np.argsort(loss)).all()  # lambda > 0: larger loss, larger weight


# -------------------------------------------------------------------------------------- CMW-Net

def test_kmeans_families_deterministic_ordered_by_size_with_official_options():
  counts = np.array([500, 480, 300, 20, 290, 15, 510, 310, 25, 12])
  fam = cmwnet.task_families(counts, 3, "size", seed=0)
  np.testing.assert_array_equal(fam, [2, 2, 1, 0, 1, 0, 2, 1, 0, 0])
  np.testing.assert_array_equal(cmwnet.task_families(counts, 3, "size", seed=7), fam)
  raw = cmwnet.task_families(counts, 3, "kmeans", seed=0)
  # Official: scikit-learn's own cluster ids, the same partition under some relabelling.
  relabel = {r: f for r, f in zip(raw, fam)}
  assert len(relabel) == 3 and all(relabel[r] == f for r, f in zip(raw, fam))
  heads = cmwnet.task_families(counts, 3, "official_heads", seed=0)
  np.testing.assert_array_equal(heads, np.array([1, 2, 0])[fam])  # small->1, moderate->2, large->0


def test_kmeans_families_degenerate_counts_and_explicit_map():
  np.testing.assert_array_equal(cmwnet.task_families(np.full(5, 100), 3), np.zeros(5))
  np.testing.assert_array_equal(cmwnet.task_families(np.array([9, 9, 1]), 3), [1, 1, 0])
  c = digits.get_config()
  c.cmwnet.families = (2, 0, 1)
  np.testing.assert_array_equal(cmwnet.families_from_config(c.cmwnet, np.ones(3)), [2, 0, 1])
  c.cmwnet.families = (0, 1)
  with pytest.raises(ValueError, match="one entry per class"):
    cmwnet.families_from_config(c.cmwnet, np.ones(3))


def test_cmwnet_picks_the_head_of_the_label_family():
  c = digits.get_config()
  c.method = "cmwnet"
  c.cmwnet.families = (0, 1, 2, 1)
  method = methods.get("cmwnet")(c, methods.DataInfo(4, 10, np.ones(4), 1))
  state = method.init(jax.random.PRNGKey(0))
  p = state["net"]["params"]
  loss = jnp.linspace(0.0, 3.0, 8)
  labels = jnp.array([0, 1, 2, 3, 3, 2, 1, 0])
  got = method.weight_fn(state, loss, labels)
  h = jax.nn.relu(loss[:, None] * p["trunk"]["kernel"][0] + p["trunk"]["bias"])
  fam = jnp.array([0, 1, 2, 1])[labels]
  want = jax.nn.sigmoid(jnp.sum(h * p["heads_kernel"][fam], -1) + p["heads_bias"][fam])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Heads differ, so the family matters: the same loss under three families, three weights.
  w3 = method.weight_fn(state, jnp.ones(3), jnp.array([0, 1, 2]))
  assert len(set(np.round(np.asarray(w3), 6))) == 3


def test_meta_set_selection_small_loss_and_balanced():
  labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
  losses = np.array([3., 1., 2., 0.5, 9., 0.1, 4., 7., 8., 6.])
  np.testing.assert_array_equal(cmwnet.small_loss_subset(losses, labels, 2), [1, 2, 3, 5, 7, 9])
  a = cmwnet.balanced_subset(labels, 3, seed=0, epoch=0)
  assert np.bincount(labels[a]).tolist() == [3, 3, 3]
  np.testing.assert_array_equal(a, cmwnet.balanced_subset(labels, 3, seed=0, epoch=0))
  draws = {tuple(cmwnet.balanced_subset(labels, 3, seed=0, epoch=e)) for e in range(10)}
  assert len(draws) > 1  # re-drawn every epoch


# ------------------------------------------------------------------------------ MW-Net variants

def test_virtual_coefficients_of_each_normalisation():
  v = jnp.array([0.2, 0.6, 0.2])
  loss = jnp.array([1.0, 2.0, 3.0])
  fn = lambda l: jnp.broadcast_to(v[:, None], l.shape)  # weights independent of the input
  np.testing.assert_allclose(weight_net.virtual_coefficients(fn, loss, "mean")[:, 0], v / 3)
  np.testing.assert_allclose(weight_net.virtual_coefficients(fn, loss, "sum")[:, 0], v)
  zero = lambda l: jnp.zeros_like(l)
  np.testing.assert_array_equal(weight_net.virtual_coefficients(zero, loss, "sum"), 0.0)
  # Live input: dF/dl_i = (V(l_i) + V'(l_i) l_i) / N for the mean objective.
  sq = lambda l: 0.1 * l ** 2
  np.testing.assert_allclose(weight_net.virtual_coefficients(sq, loss, "mean", True)[:, 0],
                             (0.1 * loss ** 2 + 0.2 * loss * loss) / 3, rtol=1e-6)
  np.testing.assert_allclose(weight_net.virtual_coefficients(sq, loss, "mean", False)[:, 0],
                             0.1 * loss ** 2 / 3, rtol=1e-6)
