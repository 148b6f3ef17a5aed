"""Class-balanced weights, LDAM margins, focal loss, DRW, the base loss and the cosine head."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from gdw_jax import losses, methods, models, optim
from gdw_jax.models import heads

CIFAR10_LT100 = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def test_class_balanced_weights_match_the_spec_example():
  w = losses.class_balanced_weights(CIFAR10_LT100, 0.9999)
  spec = [0.051, 0.077, 0.121, 0.195, 0.319, 0.525, 0.868, 1.443, 2.409, 3.993]
  np.testing.assert_allclose(w, spec, atol=1.5e-3)
  assert w.sum() == pytest.approx(10.0)
  np.testing.assert_array_equal(losses.class_balanced_weights(CIFAR10_LT100, 0.0), np.ones(10))


def test_ldam_margins_match_the_spec_example():
  m = losses.ldam_margins(CIFAR10_LT100, 0.5)
  spec = [0.158, 0.180, 0.204, 0.232, 0.264, 0.300, 0.341, 0.387, 0.441, 0.500]
  np.testing.assert_allclose(m, spec, atol=1e-3)


def _config(**loss):
  c = digits.get_config()
  c.loss.update(loss)
  return c


def _batch(c=4, n=6, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, c)), jnp.float32),
          jnp.asarray(rng.integers(0, c, n)))


@pytest.mark.parametrize("name,cw", [("ce", "cb"), ("focal", "none"), ("focal", "cb"),
                                     ("ldam", "cb")])
def test_logit_grad_is_the_gradient_and_has_the_softmax_form(name, cw):
  counts = np.array([40, 20, 8, 2])
  base = losses.make_base_loss(_config(name=name, class_weights=cw), counts, 10)
  z, y = _batch()
  step = jnp.asarray(0)
  b = base.logit_grad(z, y, step)
  auto = jax.grad(lambda z: jnp.sum(base.per_sample(z, y, step)))(z)
  np.testing.assert_allclose(b, auto, rtol=1e-5, atol=1e-6)
  # B_i = c_i (q_i - onehot_i) with c_i > 0: what GDW's zero-mean constraint relies on.
  d = base.probs(z, y) - jax.nn.one_hot(y, 4)
  c = b / d
  np.testing.assert_allclose(c, np.repeat(c[:, :1], 4, axis=1), rtol=1e-4)
  assert (c > 0).all()


def test_focal_reduces_to_ce_at_gamma_zero_and_downweights_easy_samples():
  z, y = _batch()
  ce = losses.cross_entropy(z, y)
  base0 = losses.make_base_loss(_config(name="focal", focal_gamma=0.0), np.ones(4), 1)
  np.testing.assert_allclose(base0.per_sample(z, y, 0), ce, rtol=1e-6)
  base2 = losses.make_base_loss(_config(name="focal", focal_gamma=2.0), np.ones(4), 1)
  np.testing.assert_allclose(base2.per_sample(z, y, 0), (1 - jnp.exp(-ce)) ** 2 * ce, rtol=1e-6)


def test_ldam_shifts_only_the_true_logit_and_scales():
  counts = np.array([16, 1, 16, 16])
  base = losses.make_base_loss(_config(name="ldam", ldam_s=30.0, ldam_max_m=0.5), counts, 1)
  z = jnp.zeros((2, 4))
  y = jnp.array([1, 0])  # class 1 (the rarest) has margin 0.5; class 0 has 0.5 * (1/16)^.25
  expected = [losses.cross_entropy(jnp.array([[0., -15., 0., 0.]]), jnp.array([1]))[0],
              losses.cross_entropy(jnp.array([[-7.5, 0., 0., 0.]]), jnp.array([0]))[0]]
  np.testing.assert_allclose(base.per_sample(z, y, 0), expected, rtol=1e-6)


def test_drw_switches_class_weights_on_at_drw_epoch():
  counts = np.array([100, 10])
  base = losses.make_base_loss(_config(class_weights="cb", drw=True, drw_epoch=3), counts, 5)
  y = jnp.array([0, 1])
  np.testing.assert_array_equal(base.class_weight(y, jnp.asarray(14)), [1.0, 1.0])
  cb = losses.class_balanced_weights(counts, 0.9999)
  np.testing.assert_allclose(base.class_weight(y, jnp.asarray(15)), cb, rtol=1e-6)


def test_loss_baselines_imply_their_loss_and_reductions_follow_ldam_drw():
  c = digits.get_config()
  c.method = "ldam_drw"
  s = methods.loss_settings(c)
  assert (s["name"], s["class_weights"], s["drw"]) == ("ldam", "cb", True)
  assert heads.head_kind(methods.with_loss_overrides(c)) == "cosine"
  assert c.loss.name == "ce" and heads.head_kind(c) == "linear"  # the config itself is unchanged
  c.method = "cb"
  assert methods.loss_settings(c)["class_weights"] == "cb"
  assert heads.head_kind(methods.with_loss_overrides(c)) == "linear"
  base = losses.make_base_loss(c, np.ones(3), 1, methods.loss_overrides("cb"))
  assert base.settings["reduction"] == "weighted_mean"
  c.method = "focal"
  assert losses.make_base_loss(c, np.ones(3), 1, methods.loss_overrides("focal")).settings[
      "reduction"] == "mean"


def test_cosine_head_gives_cosines_and_unit_norm_init():
  module = heads.NormedLinear(5)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 7))
  params = module.init(jax.random.PRNGKey(1), x)["params"]
  w = params["kernel"]
  np.testing.assert_allclose(jnp.linalg.norm(w, axis=0), np.ones(5), rtol=1e-5)
  out = module.apply({"params": params}, x)
  ref = (x / jnp.linalg.norm(x, axis=1, keepdims=True)) @ (w / jnp.linalg.norm(w, axis=0))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(out))) <= 1.0 + 1e-6


def test_ldam_method_builds_a_cosine_classifier():
  c = digits.get_config()
  c.method = "ldam_drw"
  fns = models.get("mlp", 10, methods.with_loss_overrides(c))  # as runs.setup builds it
  params, _ = fns.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)))
  last = params[sorted(params)[-1]]
  assert set(last) == {"kernel"}  # NormedLinear: no bias
  logits, _ = fns.apply(params, {}, jnp.ones((2, 8, 8, 1)), False)
  assert float(jnp.max(jnp.abs(logits))) <= 1.0 + 1e-6


def test_lr_warmup_is_ldam_drw_per_epoch_ramp():
  c = digits.get_config()
  c.update(lr_schedule="step_epoch", lr_milestones=(6, 8), lr_decay=0.01, lr_warmup_epochs=5,
           learning_rate=0.1, num_epochs=10)
  sched = optim.lr_schedule(c, 4)
  lrs = [float(sched(jnp.asarray(e * 4))) for e in range(10)]
  np.testing.assert_allclose(lrs, [0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 1e-3, 1e-3, 1e-5, 1e-5],
                             rtol=1e-5)
