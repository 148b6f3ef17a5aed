"""gdw_jax as a library (docs/library.md): one call in your own step, linen / NNX adapters, the
examples (run here, i.e. in CI), and the checks at the public boundaries."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gdw_jax
from configs import digits
from examples import linen_gdw, nnx_gdw
from gdw_jax import api, methods, optim, train_step

N, M, C = 20, 10, 10


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _batches(steps, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(steps):
    out.append(({"x": jnp.asarray(rng.random((N, 64)), dtype), "y": jnp.asarray(
        rng.integers(0, C, N))}, {"x": jnp.asarray(rng.random((M, 64)), dtype),
                                  "y": jnp.asarray(rng.integers(0, C, M))}))
  return out


def _rel(a, b):
  a, b = np.concatenate([np.ravel(v) for v in jax.tree.leaves(a)]), np.concatenate(
      [np.ravel(v) for v in jax.tree.leaves(b)])
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_example_loop_with_the_trainers_optimizer_reproduces_the_trainer(x64):
  """examples/linen_gdw.py's step (reweighted_grads + the user's optax update), given the
  trainer's optimizer (SGD m0.9, coupled L2 5e-4, per-epoch cosine lr, 1 step per epoch so the
  lr changes every step), against train_step.make_train_step on the same weights and batches."""
  config = digits.get_config()
  config.dtype, config.num_epochs = "float64", 4
  model = gdw_jax.from_linen(linen_gdw.CNN(dtype=jnp.float64), rngs=("dropout",))
  info = methods.DataInfo(C, N, np.full(C, N // C), 1)
  schedule = optim.lr_schedule(config, 1)
  tx = optim.classifier_optimizer(config)
  batches = _batches(3)
  state = train_step.create_train_state(jax.random.PRNGKey(0), model,
                                   methods.get("gdw")(config, info, jnp.float64), tx,
                                   batches[0][0]["x"][:2])
  user_tx = optim.make("sgd", schedule, weight_decay=5e-4, momentum=0.9)
  user = linen_gdw.State(state.params, state.model_state, user_tx.init(state.params),
                         state.method_state, state.step)
  trainer_step = jax.jit(train_step.make_train_step(
      model, methods.get("gdw")(config, info, jnp.float64), tx, schedule))
  user_step = linen_gdw.make_step(model, gdw_jax.gdw(dtype=jnp.float64), user_tx, schedule)
  for t, (batch, meta) in enumerate(batches):
    state, _, _ = trainer_step(state, batch, meta)
    user, aux = user_step(user, batch, meta, jax.random.PRNGKey(t))
  assert int(user.step) == int(state.step) == 3
  assert _rel(user.params, state.params) < 1e-10
  assert _rel(user.model_state["batch_stats"], state.model_state["batch_stats"]) < 1e-10
  np.testing.assert_array_equal(user.model_state["rngs"]["dropout"],
                                state.model_state["rngs"]["dropout"])
  assert _rel(user.method_state["params"], state.method_state["params"]) < 1e-10
  # and the step moved the weights (a stuck loop would also "agree")
  assert _rel(user.params, train_step.create_train_state(
      jax.random.PRNGKey(0), model, gdw_jax.gdw(dtype=jnp.float64), tx,
      batches[0][0]["x"][:2]).params) > 1e-3


def _linen_and_nnx(dropout=0.0):
  """The examples' linen and NNX CNNs (float64) holding the same weights."""
  lin = gdw_jax.from_linen(linen_gdw.CNN(dropout=dropout, dtype=jnp.float64), rngs=("dropout",))
  x = jnp.zeros((2, 64), jnp.float64)
  params, state = lin.init(jax.random.PRNGKey(3), x)
  m = nnx_gdw.CNN(dropout=dropout, dtype=jnp.float64, rngs=nnx.Rngs(0, dropout=1))
  for layer, name in ((m.conv, "Conv_0"), (m.bn, "BatchNorm_0"), (m.dense, "Dense_0")):
    for key, value in params[name].items():
      getattr(layer, key).value = value
  m.bn.mean.value = state["batch_stats"]["BatchNorm_0"]["mean"] + 0.1   # non-trivial stats
  m.bn.var.value = state["batch_stats"]["BatchNorm_0"]["var"] * 2.0
  state = {**state, "batch_stats": {"BatchNorm_0": {"mean": m.bn.mean.value,
                                                    "var": m.bn.var.value}}}
  return (lin, params, state), gdw_jax.from_nnx(m)


def test_nnx_path_equals_linen_path_on_the_same_weights(x64):
  (lin, lp, ls), nx = _linen_and_nnx()
  np_, ns = nx.init(None, None)
  method = gdw_jax.gdw(dtype=jnp.float64)
  ms_l = ms_n = method.init(jax.random.PRNGKey(0))
  step = jax.jit(lambda fns, *a, **k: api.reweighted_grads(method, *a[:1], fns.apply, *a[1:], **k),
                 static_argnums=0)
  tx = optax.sgd(0.1)
  ol, on = tx.init(lp), tx.init(np_)
  for t, (batch, meta) in enumerate(_batches(2, seed=1)):
    gl, ls, ms_l, aux_l = step(lin, ms_l, lp, ls, batch, meta, lr=0.1, step=t)
    gn, ns, ms_n, aux_n = step(nx, ms_n, np_, ns, batch, meta, lr=0.1, step=t)
    np.testing.assert_allclose(aux_n["logits"], aux_l["logits"], rtol=1e-10, atol=1e-12)
    assert _rel(gn["conv"]["kernel"], gl["Conv_0"]["kernel"]) < 1e-10
    assert _rel(gn["dense"]["kernel"], gl["Dense_0"]["kernel"]) < 1e-10
    assert _rel(gn["bn"]["scale"], gl["BatchNorm_0"]["scale"]) < 1e-10
    # NNX keeps BatchNorm running statistics in float32 whatever the dtype (linen's become
    # float64 after an update): measured 2e-8.
    assert _rel(ns["bn"]["mean"], ls["batch_stats"]["BatchNorm_0"]["mean"]) < 1e-6
    assert _rel(ms_n["params"], ms_l["params"]) < 1e-10
    ul, ol = tx.update(gl, ol)
    un, on = tx.update(gn, on)
    lp, np_ = optax.apply_updates(lp, ul), optax.apply_updates(np_, un)
  x = _batches(1, seed=2)[0][0]["x"]  # eval mode: running statistics (float32 in NNX)
  np.testing.assert_allclose(nx.apply(np_, ns, x, False)[0], lin.apply(lp, ls, x, False)[0],
                             rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_dropout_is_a_function_of_the_model_state(kind, x64):
  """Same model_state -> same mask (the look-ahead differentiates the real forward's function);
  the returned state carries the next key, so the next step draws a new mask; eval mode draws
  nothing and returns the state unchanged."""
  (lin, lp, ls), nx = _linen_and_nnx(dropout=0.5)
  fns, params, state = (lin, lp, ls) if kind == "linen" else (nx, *nx.init(None, None))
  x = jnp.asarray(np.random.default_rng(0).random((6, 64)))
  a, next_state = fns.apply(params, state, x, True)
  b, _ = fns.apply(params, state, x, True)
  c, _ = fns.apply(params, next_state, x, True)
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
  assert fns.apply(params, state, x, False)[1] is state


@pytest.mark.parametrize("example", [linen_gdw, nnx_gdw])
def test_examples_run(example, capsys):
  """Each example's own main, 3 epochs: above chance (10%) by far (40% label noise; measured
  56% for linen, 74% for NNX, which draws other initial weights)."""
  acc = example.main(["--epochs", "3"])
  assert acc > 35.0, acc
  assert "test accuracy" in capsys.readouterr().out


# -------------------------------------------------------------------------- public boundaries

def _tiny():
  """A small linen model (fast eager calls) with a BatchNorm statistic to carry."""
  from gdw_jax.models.mlp import MLP
  return gdw_jax.from_linen(MLP(C, hidden=(8,), batch_norm=True))


def _call(batch=None, meta=None, lr=0.1, step=0, method=None, apply_fn=None, jit=False):
  model = _tiny()
  good, good_meta = _batches(1, dtype=np.float32)[0]
  batch = good if batch is None else {**good, **batch}
  meta = good_meta if meta is None else (None if meta == "none" else {**good_meta, **meta})
  params, state = model.init(jax.random.PRNGKey(0), good["x"][:2])
  method = gdw_jax.gdw() if method is None else method
  ms = method.init(jax.random.PRNGKey(1)) if isinstance(method, gdw_jax.Method) else None
  fn = lambda b, m: gdw_jax.reweighted_grads(method, ms, apply_fn or model.apply, params, state,
                                             b, m, lr=lr, step=step)
  return (jax.jit(fn) if jit else fn)(batch, meta)


BAD_CALLS = [
    ("float_labels", dict(batch={"y": jnp.zeros(N)}), AssertionError, "integer class indices"),
    ("label_rank", dict(batch={"y": jnp.zeros((N, C), jnp.int32)}), AssertionError,
     "labels must be class indices [N]"),
    ("rows", dict(batch={"x": jnp.zeros((N + 1, 64))}), AssertionError,
     f"x must have one row per label ({N})"),
    ("meta_rows", dict(meta={"x": jnp.zeros((M - 1, 64))}), AssertionError,
     f"the meta batch must have one row per meta label ({M})"),
    ("meta_labels", dict(meta={"y": jnp.zeros(M)}), AssertionError, "meta labels must be integer"),
    ("no_meta", dict(meta="none"), ValueError, "method gdw needs a meta_batch"),
    ("lr_vector", dict(lr=jnp.ones(3)), AssertionError, "lr and step must be scalars"),
    ("step_float", dict(step=jnp.float32(1.0)), AssertionError, "step must be an integer"),
    ("logits_rank", dict(apply_fn=lambda p, s, x, t: (jnp.zeros((x.shape[0],)), s)),
     AssertionError, "logits must be [N, C]"),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("kwargs,error,words", [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_reweighted_grads_rejects_bad_input_with_a_clear_message(kwargs, error, words, jit):
  with pytest.raises(error) as e:
    _call(jit=jit, **kwargs)
  assert "gdw_jax.reweighted_grads" in str(e.value) and words in str(e.value), str(e.value)


def test_other_public_calls_reject_bad_input():
  with pytest.raises(TypeError, match="call the constructor"):
    _call(method=gdw_jax.gdw)
  with pytest.raises(TypeError, match="a dict with 'x'"):
    gdw_jax.reweighted_grads(gdw_jax.erm(), {}, None, {}, {}, (1, 2), None, lr=0.1, step=0)
  with pytest.raises(TypeError, match="flax.nnx.Module"):
    gdw_jax.from_nnx(linen_gdw.CNN())
  with pytest.raises(AssertionError, match="StepContext: logits must have one row per label"):
    gdw_jax.StepContext(apply_fn=None, params={}, model_state={}, x=jnp.zeros((3, 2)),
                        labels=jnp.zeros(3, jnp.int32), logits=jnp.zeros((4, 2)),
                        lr=jnp.asarray(0.1))
  with pytest.raises(ValueError, match="clip must be > 0.0"):
    gdw_jax.gdw(clip=0.0)
  with pytest.raises(ValueError, match="needs class_counts"):
    gdw_jax.base_loss("ldam")
  with pytest.raises(ValueError, match="sets name='focal' itself"):
    gdw_jax.focal(name="ce")


def test_lr_may_be_a_float_an_array_or_a_schedule():
  schedule = optax.cosine_decay_schedule(0.1, 10)
  g_float = _call(lr=float(schedule(3)), step=3, jit=True)[0]
  g_array = _call(lr=schedule(3), step=3, jit=True)[0]
  g_sched = _call(lr=schedule, step=3, jit=True)[0]
  g_other = _call(lr=0.05, step=3, jit=True)[0]
  assert _rel(g_array, g_float) < 1e-6 and _rel(g_sched, g_float) < 1e-6
  assert _rel(g_other, g_float) > 1e-4  # the look-ahead lr does reach the meta step


def test_the_trainer_step_goes_through_reweighted_grads(monkeypatch):
  calls = []
  real = api.reweighted_grads
  monkeypatch.setattr(api, "reweighted_grads", lambda *a, **k: calls.append(k) or real(*a, **k))
  config = digits.get_config()
  model = _tiny()
  method = gdw_jax.gdw()
  tx = optim.classifier_optimizer(config)
  batch, meta = _batches(1, dtype=np.float32)[0]
  state = train_step.create_train_state(jax.random.PRNGKey(0), model, method, tx, batch["x"][:2])
  step = train_step.make_train_step(model, method, tx, optim.lr_schedule(config, 5),
                                    hypergrad="jvp")
  step(state, batch, meta)
  assert len(calls) == 1 and calls[0]["hypergrad"] == "jvp"
