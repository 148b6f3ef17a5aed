"""Static method phases: the trainer compiles one step per phase (no ``lax.switch`` around the
meta step, which XLA:CPU runs ~80x slower for convolutions) and must get exactly what the traced
fallback computes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from gdw_jax import methods, models, optim, train_step
from gdw_jax.methods import cmwnet


@pytest.mark.parametrize("warmup,meta_every,can_meta", [(0, 1, True), (3, 4, True), (2, 1, False)])
def test_host_phase_matches_traced_phase(warmup, meta_every, can_meta):
  spe = 5
  for step in range(20):
    host = cmwnet.phase(step, spe, warmup * spe, meta_every, can_meta)
    traced = int(cmwnet.phase(jnp.asarray(step), spe, warmup * spe, meta_every, can_meta))
    assert host == traced, step
    assert isinstance(host, int)


@pytest.mark.parametrize("method", ["cmwnet", "cmwnet_sl"])
def test_static_phase_steps_equal_traced_switch(method):
  c = digits.get_config(f"method={method}")
  c.cmwnet.meta_every = c.cmwnet_sl.meta_every = 2
  c.cmwnet.warmup_epochs = 1
  c.cmwnet_sl.warmup_epochs = 1
  c.cmwnet.meta_source = c.cmwnet_sl.meta_source = "clean"
  spe, k = 3, 10
  info = methods.DataInfo(k, 60, np.array([30, 20, 2, 2, 1, 1, 1, 1, 1, 1]), spe)
  m = methods.get(method)(c, info)
  assert m.phase is not None
  model = models.get("mlp", k, c)
  tx = optim.classifier_optimizer(c)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 8, 8, 1)).astype(np.float32))
  batch = {"x": x, "y": jnp.asarray(rng.integers(0, k, 8)), "index": jnp.arange(8)}
  meta = {"x": x[::-1], "y": batch["y"][::-1]}
  state = train_step.create_train_state(jax.random.PRNGKey(0), model, m, tx, x[:2])
  step = jax.jit(train_step.make_train_step(model, m, tx, lambda s: jnp.asarray(0.1)),
                 static_argnames="phase")
  a = b = state
  phases = []
  for s in range(7):  # warm-up epoch (3 steps), then meta / reweight
    phases.append(m.phase(s))
    a, ma, _ = step(a, batch, meta, phase=m.phase(s))
    b, mb, _ = step(b, batch, meta)
    np.testing.assert_allclose(ma["meta_step"], mb["meta_step"])
  assert phases == [0, 0, 0, 2, 1, 2, 2]  # meta every 2nd iteration of each epoch (batch_idx % k)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
