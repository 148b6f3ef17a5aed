"""One learning rate per step, from one place: a train state built at any step (a parity
fixture recorded mid-training, a user's own loop) takes the same next step as one that got there
by training, with no hidden optimizer counter to keep in sync."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from gdw_jax import methods, models, optim, train_step

C, N, SPE = 3, 8, 2


def _setup(method):
  c = common.base_config()
  c.method, c.num_epochs, c.learning_rate = method, 6, 0.1
  c.absgd.start_epoch = 1   # ABSGD's stage switch (lambda 200 -> 5) falls inside the k steps
  model = models.get("mlp", C, {"mlp_hidden": (5,)}, jnp.float32)
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  batch = {"x": jax.random.normal(k[0], (N, 4)), "y": jax.random.randint(k[1], (N,), 0, C)}
  meta = {"x": jax.random.normal(k[2], (N, 4)), "y": jax.random.randint(k[3], (N,), 0, C)}
  info = methods.DataInfo(C, N * SPE, np.array([6, 5, 5]), SPE)
  m = methods.get(method)(c, info)
  tx = optim.classifier_optimizer(c)
  schedule = optim.lr_schedule(c, SPE)
  state = train_step.create_train_state(jax.random.PRNGKey(1), model, m, tx, batch["x"])
  step = jax.jit(train_step.make_train_step(model, m, tx, schedule))
  return tx, schedule, state, step, batch, meta if m.uses_meta else None


@pytest.mark.parametrize("method", ["gdw", "absgd"])
def test_state_created_at_step_k_takes_the_trained_next_step(method):
  tx, schedule, state, step, batch, meta = _setup(method)
  k = 5  # epoch 2 of 6: cosine lr 0.075, not the base 0.1
  for _ in range(k):
    state, _, _ = step(state, batch, meta)
  assert float(schedule(jnp.asarray(k))) == pytest.approx(0.075)
  # Built from scratch at step k: the optimizer's momentum buffer is real state and is kept;
  # everything else of the optimizer is freshly initialised (its counters at 0).
  fresh_opt = tx.init(state.params)._replace(inner_state=state.opt_state.inner_state)
  assert int(fresh_opt.count) == 0 and int(state.opt_state.count) == k
  created = train_step.TrainState(step=jnp.asarray(k, jnp.int32), params=state.params,
                             model_state=state.model_state, opt_state=fresh_opt,
                             method_state=state.method_state, rng=state.rng)
  trained_next, m_trained, _ = step(state, batch, meta)
  created_next, m_created, _ = step(created, batch, meta)
  assert float(m_created["lr"]) == pytest.approx(0.075)
  for a, b in zip(jax.tree.leaves(trained_next.params), jax.tree.leaves(created_next.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The update really used the scheduled lr: redoing it with the base lr moves differently.
  base_opt = optim.set_learning_rate(fresh_opt, 0.1)
  grads = jax.tree.map(jnp.ones_like, state.params)
  u_sched = tx.update(grads, optim.set_learning_rate(fresh_opt, 0.075), state.params)[0]
  u_base = tx.update(grads, base_opt, state.params)[0]
  assert not np.allclose(jax.tree.leaves(u_sched)[0], jax.tree.leaves(u_base)[0])


def test_an_optimizer_with_its_own_schedule_is_refused():
  """A classifier optimizer that keeps its own schedule could disagree with the look-ahead lr:
  the step refuses it instead of silently using two learning rates."""
  tx = optax_sgd_with_schedule()
  with pytest.raises(TypeError, match="must take its learning rate from the train step"):
    optim.set_learning_rate(tx.init({"w": jnp.zeros(2)}), 0.1)


def optax_sgd_with_schedule():
  import optax
  return optax.sgd(optax.cosine_decay_schedule(0.1, 100), momentum=0.9)
