"""The meta gradient, GDW's class-level step and MW-Net, on a tiny float64 model.

The MLP has a batch-normalised hidden layer, so samples are coupled exactly like train-mode BN
couples them in a ResNet.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from gdw_jax import bilevel, losses, methods, models, optim, train_step
from gdw_jax.methods import gdw

N, C, D, M = 6, 4, 5, 5


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _problem(seed=0):
  model = models.get("mlp", C, {"mlp_hidden": (7,), "mlp_batch_norm": True}, jnp.float64)
  k = jax.random.split(jax.random.PRNGKey(seed), 5)
  x = jax.random.normal(k[0], (N, D), jnp.float64)
  y = jax.random.randint(k[1], (N,), 0, C)
  mx = jax.random.normal(k[2], (M, D), jnp.float64)
  my = jax.random.randint(k[3], (M,), 0, C)
  params, model_state = model.init(k[4], x)
  logits, _ = model.apply(params, model_state, x, True)
  ctx = bilevel.StepContext(apply_fn=model.apply, params=params, model_state=model_state, x=x,
                            labels=y, logits=logits, lr=jnp.asarray(0.3, jnp.float64),
                            meta_x=mx, meta_y=my)
  return model, ctx


def _closed_form(model, ctx, e, w):
  """-(lr/N) E * (J_z . grad L_meta(theta')), the chain rule written out by hand."""
  logits_fn = lambda p: model.apply(p, ctx.model_state, ctx.x, True)[0]
  _, vjp = jax.vjp(logits_fn, ctx.params)
  (g,) = vjp(e * w / N)
  theta_v = jax.tree.map(lambda p, g: p - ctx.lr * g, ctx.params, g)
  grad_meta = jax.grad(lambda p: bilevel.meta_loss(ctx, p))(theta_v)
  _, jz = jax.jvp(logits_fn, (ctx.params,), (grad_meta,))
  return -(ctx.lr / N) * e * jz


def test_class_level_meta_gradient_matches_closed_form():
  model, ctx = _problem()
  e = losses.ce_logit_grad(ctx.logits, ctx.labels, 0.999)
  w = jax.random.uniform(jax.random.PRNGKey(9), (N, C), jnp.float64, 0.2, 1.5)
  _, g = bilevel.meta_gradient(ctx, e, w)
  expected = _closed_form(model, ctx, e, w)
  assert g.shape == (N, C)
  assert float(jnp.abs(expected).max()) > 1e-6  # not trivially zero
  np.testing.assert_allclose(g, expected, rtol=1e-9, atol=1e-15)


def test_instance_meta_gradient_is_class_sum_of_closed_form():
  model, ctx = _problem(1)
  e = losses.ce_logit_grad(ctx.logits, ctx.labels, None)
  w = jnp.full((N, 1), 0.5, jnp.float64)
  _, g = bilevel.meta_gradient(ctx, e, w)
  expected = _closed_form(model, ctx, e, w).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(g, expected, rtol=1e-9, atol=1e-15)


def test_meta_gradient_matches_finite_differences():
  _, ctx = _problem(2)
  e = losses.ce_logit_grad(ctx.logits, ctx.labels, 0.999)
  w = jnp.full((N, C), 0.7, jnp.float64)
  _, g = bilevel.meta_gradient(ctx, e, w)
  f = lambda w: bilevel.meta_loss(ctx, bilevel.virtual_params(ctx, e * w / N))
  h = 1e-5
  for i, c in [(0, 0), (3, 2), (5, 3)]:
    dw = jnp.zeros_like(w).at[i, c].set(h)
    fd = (f(w + dw) - f(w - dw)) / (2 * h)
    np.testing.assert_allclose(g[i, c], fd, rtol=1e-6, atol=1e-12)


def test_zero_mean_constraint_rows_sum_to_zero():
  k = jax.random.split(jax.random.PRNGKey(3), 3)
  logits = 3 * jax.random.normal(k[0], (20, C), jnp.float64)
  y = jax.random.randint(k[1], (20,), 0, C)
  w = jax.random.uniform(k[2], (20, C), jnp.float64, 1e-3, 2.0)
  p = losses.clamped_probs(logits, 0.999)
  e = p - jax.nn.one_hot(y, C, dtype=p.dtype)
  w_star = gdw.zero_mean_constraint(w, p, y)
  np.testing.assert_allclose(jnp.sum(e * w_star, axis=1), 0.0, atol=1e-12)
  # Non-target entries untouched; constant rows stay constant (instance weighting).
  off = 1 - jax.nn.one_hot(y, C)
  np.testing.assert_array_equal(w_star * off, w * off)
  const = gdw.zero_mean_constraint(jnp.tile(w[:, :1], (1, C)), p, y)
  np.testing.assert_allclose(const, jnp.tile(w[:, :1], (1, C)), rtol=1e-12)


def _config(method, **kw):
  c = common.base_config()
  c.method = method
  for k, v in kw.items():
    c[k] = v
  return c


def test_gdw_update_follows_the_official_recipe():
  model, ctx = _problem(4)
  config = _config("gdw")
  info = methods.DataInfo(C, N, np.ones(C), 1)
  method = methods.get("gdw")(config, info, dtype=jnp.float64)
  state = method.init(jax.random.PRNGKey(0))
  cot, new_state, aux = method.update(ctx, state)

  # Recompute by hand: v, W, g, U, W*.
  p = losses.clamped_probs(ctx.logits, 0.999)
  e = p - jax.nn.one_hot(ctx.labels, C, dtype=p.dtype)
  loss = losses.cross_entropy(ctx.logits, ctx.labels)[:, None]
  vnet = models.VNet(hidden=100, dtype=jnp.float64)
  v = vnet.apply({"params": state["params"]}, loss)
  w = gdw.zero_mean_constraint(jnp.tile(v, (1, C)), p, ctx.labels)
  _, g = bilevel.meta_gradient(ctx, e, w)
  u = jnp.clip(100.0 * g / jnp.abs(g).sum(), -0.2, 0.2)
  w_star = gdw.zero_mean_constraint(jnp.clip(w - u, 1e-6, 1e6), p, ctx.labels)
  np.testing.assert_allclose(aux["weights"], w_star, rtol=1e-12)
  np.testing.assert_allclose(cot, e * w_star / N, rtol=1e-12)
  np.testing.assert_allclose(jnp.sum(cot, axis=1), 0.0, atol=1e-14)
  # The first-stage net took one Adam step on dL_meta/dphi.
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state["params"],
                       new_state["params"])
  assert max(jax.tree.leaves(moved)) > 0


def test_mwnet_with_constant_weight_is_weighted_erm():
  model, ctx = _problem(5)
  config = _config("mwnet", prob_clamp=1.0)
  config.vnet.lr = 0.0          # freeze the weight net...
  config.vnet.weight_decay = 0.0
  info = methods.DataInfo(C, N, np.ones(C), 1)
  method = methods.get("mwnet")(config, info, dtype=jnp.float64)
  tx = optim.classifier_optimizer(config)
  state = train_step.create_train_state(jax.random.PRNGKey(1), model, method, tx, ctx.x)
  # ... and make it output the constant sigmoid(0.4) for every loss.
  vparams = jax.tree.map(jnp.zeros_like, state.method_state["params"])
  vparams["linear2"]["bias"] = jnp.full((1,), 0.4, jnp.float64)
  state = state.replace(method_state={**state.method_state, "params": vparams},
                        params=ctx.params, model_state=ctx.model_state)
  step = jax.jit(train_step.make_train_step(model, method, tx, lambda s: jnp.asarray(0.3)))
  batch = {"x": ctx.x, "y": ctx.labels}
  new, metrics, weights = step(state, batch, {"x": ctx.meta_x, "y": ctx.meta_y})
  c = jax.nn.sigmoid(0.4)
  np.testing.assert_allclose(weights, c, rtol=1e-12)

  def weighted_erm(p):
    logits, _ = model.apply(p, ctx.model_state, ctx.x, True)
    return c * jnp.mean(losses.cross_entropy(logits, ctx.labels))

  grads = jax.grad(weighted_erm)(ctx.params)
  updates, _ = tx.update(grads, optim.set_learning_rate(tx.init(ctx.params), 0.3), ctx.params)
  expected = optax.apply_updates(ctx.params, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14),
               new.params, expected)


def test_only_the_real_forward_updates_batch_norm_stats():
  model, ctx = _problem(6)
  config = _config("gdw")
  method = methods.get("gdw")(config, methods.DataInfo(C, N, np.ones(C), 1), dtype=jnp.float64)
  tx = optim.classifier_optimizer(config)
  state = train_step.create_train_state(jax.random.PRNGKey(1), model, method, tx, ctx.x)
  state = state.replace(params=ctx.params, model_state=ctx.model_state)
  step = jax.jit(train_step.make_train_step(model, method, tx, lambda s: jnp.asarray(0.3)))
  new, _, _ = step(state, {"x": ctx.x, "y": ctx.labels}, {"x": ctx.meta_x, "y": ctx.meta_y})
  _, expected = model.apply(ctx.params, ctx.model_state, ctx.x, True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), new.model_state,
               expected)
  # The meta batch's statistics would differ: make sure the check is not vacuous.
  _, meta_stats = model.apply(ctx.params, ctx.model_state, ctx.meta_x, True)
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), meta_stats, expected)
  assert max(jax.tree.leaves(diff)) > 1e-6


def test_sgd_optimizer_has_pytorch_semantics():
  """Coupled L2 then heavy ball with buf_0 = g: p1 = p0 - lr (g + wd p0)."""
  config = _config("erm", weight_decay=0.01, momentum=0.9)
  tx = optim.classifier_optimizer(config)
  p0 = {"w": jnp.array([1.0, -2.0], jnp.float64)}
  g = {"w": jnp.array([0.3, 0.1], jnp.float64)}
  st = optim.set_learning_rate(tx.init(p0), 0.5)
  u1, st = tx.update(g, st, p0)
  p1 = optax.apply_updates(p0, u1)
  d1 = g["w"] + 0.01 * p0["w"]
  np.testing.assert_allclose(p1["w"], p0["w"] - 0.5 * d1)
  u2, _ = tx.update(g, st, p1)
  d2 = g["w"] + 0.01 * p1["w"]
  np.testing.assert_allclose(optax.apply_updates(p1, u2)["w"], p1["w"] - 0.5 * (0.9 * d1 + d2))
