"""ABSGD's label-noise branch: SCE / truncated-GCE base losses, logit normalisation, the noisy
weights on a hand-computed batch, gradient clipping and per-parameter L2 in the classifier
optimizer, the warm-restart schedule and the CIFAR recipes."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cifar, digits, recipes
from gdw_jax import bilevel, losses, methods, optim, validation
from gdw_jax.validation import ConfigError

Z = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, -2.0, 0.0], [-30.0, 0.0, 0.0]])
Y = np.array([0, 2, 1, 0])
A = -np.log(1e-4)  # 9.2103...


def _softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def _base(name, **loss):
  c = digits.get_config()
  c.loss.update(name=name, **loss)
  return losses.make_base_loss(c, np.ones(3), 1)


def test_sce_per_sample_and_gradient_by_hand():
  q = _softmax(Z)
  ce = -np.log(q[np.arange(4), Y])
  other = np.ones_like(q)
  other[np.arange(4), Y] = 0
  rce = A * np.sum(np.maximum(q, 1e-7) * other, 1)   # row 4: q_0 = 9e-14 is clipped to 1e-7
  base = _base("sce", sce_alpha=6.0, sce_beta=2.0)
  np.testing.assert_allclose(base.per_sample(jnp.asarray(Z), jnp.asarray(Y), 0),
                             6 * ce + 2 * rce, rtol=1e-6)
  g = np.asarray(base.logit_grad(jnp.asarray(Z, jnp.float32), jnp.asarray(Y), 0))
  onehot = np.eye(3)[Y]
  c = 6 + 2 * A * q[np.arange(4), Y]                     # d/dz [A (1 - q_y)] = A q_y (q - e_y)
  np.testing.assert_allclose(g[:3], (c[:, None] * (q - onehot))[:3], rtol=1e-5, atol=1e-6)
  # where a probability sits under the 1e-7 clip it gets no RCE gradient (torch.clamp)
  assert g[3, 0] == pytest.approx(6 * (q[3, 0] - 1) - 2 * A * q[3, 0] * q[3, 0], abs=1e-6)


def test_truncated_gce_per_sample_and_gradient_by_hand():
  q = _softmax(Z)
  p_y = q[np.arange(4), Y]
  base = _base("tce", tce_q=0.7, tce_k=0.5)
  l = np.asarray(base.per_sample(jnp.asarray(Z), jnp.asarray(Y), 0))
  np.testing.assert_allclose(l, (0.5 ** 0.7 - p_y ** 0.7) / 0.7, rtol=1e-5, atol=1e-7)
  assert l[0] < 0 < l[2]                                 # negative once p_y > k = 0.5
  g = np.asarray(base.logit_grad(jnp.asarray(Z, jnp.float32), jnp.asarray(Y), 0))
  np.testing.assert_allclose(g, (p_y ** 0.7)[:, None] * (q - np.eye(3)[Y]), rtol=1e-4,
                             atol=1e-7)
  assert np.isfinite(g).all()                            # p_y ~ 1e-13 in row 4


def test_logit_norm_divides_by_the_norm_to_the_tau():
  base = _base("ce", logit_tau=1.0)
  zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
  q = _softmax(zn)
  np.testing.assert_allclose(base.per_sample(jnp.asarray(Z), jnp.asarray(Y), 0),
                             -np.log(q[np.arange(4), Y]), rtol=1e-6)
  g = np.asarray(base.logit_grad(jnp.asarray(Z), jnp.asarray(Y), 0))
  num = np.zeros_like(Z)                                 # central differences of the loss
  with jax.enable_x64(True):
    for i in range(4):
      for j in range(3):
        d = np.zeros_like(Z)
        d[i, j] = 1e-5
        lp = base.per_sample(jnp.asarray(Z + d, jnp.float64), jnp.asarray(Y), 0)
        lm = base.per_sample(jnp.asarray(Z - d, jnp.float64), jnp.asarray(Y), 0)
        num[i, j] = (float(lp[i]) - float(lm[i])) / 2e-5
  np.testing.assert_allclose(g, num, atol=1e-5)


def _ctx(logits, labels):
  return bilevel.StepContext(apply_fn=None, params=None, model_state=None, x=None,
                             labels=jnp.asarray(labels), logits=jnp.asarray(logits, jnp.float32),
                             lr=jnp.asarray(0.1), meta_x=None, meta_y=None, step=jnp.asarray(0))


def test_absgd_noisy_weights_on_a_hand_computed_batch():
  """Two steps of ``noisy_label/loss.py`` ABLoss (ABCE) with lambda -2, gamma 0.9, abAlpha 0.5:
  u_1 = 0.9 * 0.5 * mean(e), p = stopgrad(e / (u B)) + 1/B with e = exp(l / lambda)."""
  c = digits.get_config()
  recipes.absgd_noise(c)
  c.absgd.update(lam=-2.0, gamma=0.9, ab_alpha=0.5, start_epoch=0)
  method = methods.get("absgd")(c, methods.DataInfo(3, 8, np.ones(3), 1))
  # logits (a, 0, 0) with label 0 have CE log(1 + 2 e^-a): these give CE 0.2, 1.5, 3.0, 0.7
  l1 = np.array([0.2, 1.5, 3.0, 0.7])
  z = np.stack([-np.log((np.exp(l1) - 1) / 2), np.zeros(4), np.zeros(4)], 1)
  # by hand: e = exp(l / -2) = 0.904837, 0.472367, 0.223130, 0.704688; mean 0.576256;
  # u_1 = 0.45 * 0.576256 = 0.259315; p = e / (4 u_1) + 1/4
  p1 = np.array([1.122334, 0.705398, 0.465115, 0.929375])
  g, state, aux = method.update(_ctx(z, [0, 0, 0, 0]), method.init(None))
  np.testing.assert_allclose(np.asarray(aux["weights"])[:, 0], p1 * 4, rtol=2e-5)
  assert float(aux["absgd_weight_sum"]) == pytest.approx(p1.sum(), rel=2e-5)
  q = _softmax(z)
  np.testing.assert_allclose(g, p1[:, None] * (q - np.eye(3)[[0, 0, 0, 0]]), rtol=1e-4,
                             atol=1e-7)                  # G = p_i dCE_i/dz_i
  # second step, losses 1.0 for all: e_2 = 0.606531, u_2 = 0.1 u_1 + 0.45 e_2 = 0.298870,
  # p = 0.606531 / (4 * 0.298870) + 1/4 = 0.757354
  z2 = np.stack([np.full(4, -np.log((np.e - 1) / 2)), np.zeros(4), np.zeros(4)], 1)
  _, state2, aux2 = method.update(_ctx(z2, [0, 0, 0, 0]), state)
  np.testing.assert_allclose(np.asarray(aux2["weights"])[:, 0], 0.757354 * 4, rtol=2e-5)
  assert float(state2["log_u"]) == pytest.approx(np.log(0.298870), abs=2e-5)


def test_absgd_with_sce_weights_follow_the_sce_losses():
  c = digits.get_config()
  recipes.absgd_sce(c)                                   # ABSCE: SCE 6 / 2, tau 1, lambda -2
  c.absgd.start_epoch = 0
  method = methods.get("absgd")(c, methods.DataInfo(3, 8, np.ones(3), 1))
  base = losses.make_base_loss(c, np.ones(3), 1)
  z = jnp.asarray(Z, jnp.float32)
  l = np.asarray(base.per_sample(z, jnp.asarray(Y), 0))
  zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)      # tau 1: SCE of the normalised logits
  qn = _softmax(zn)
  other = 1 - np.eye(3)[Y]
  sce = 6 * -np.log(qn[np.arange(4), Y]) + 2 * A * np.sum(np.maximum(qn, 1e-7) * other, 1)
  np.testing.assert_allclose(l, sce, rtol=1e-5)
  g, _, aux = method.update(_ctx(Z, Y), method.init(None))
  e = np.exp(l / -2)
  p = e / (0.45 * e.mean() * 4) + 0.25
  np.testing.assert_allclose(np.asarray(aux["weights"])[:, 0], p * 4, rtol=1e-5)
  np.testing.assert_allclose(g, p[:, None] * np.asarray(base.logit_grad(z, jnp.asarray(Y), 0)),
                             rtol=1e-5, atol=1e-7)
  assert np.argsort(p).tolist() == np.argsort(-l).tolist()  # lambda < 0: big loss, small p


def _params():
  return {"conv": {"kernel": jnp.array([3.0, 4.0])}, "fc1": {"kernel": jnp.array([1.0])},
          "fc1_bn": {"scale": jnp.array([2.0])}, "fc2": {"kernel": jnp.array([1.0])}}


def test_classifier_optimizer_clips_the_raw_gradient_then_adds_per_group_l2():
  c = digits.get_config()
  c.update(momentum=0.0, weight_decay=0.1, grad_clip_norm=1.0,
           weight_decay_overrides="fc1:0.5")
  tx = optim.classifier_optimizer(c)
  params = _params()
  grads = {"conv": {"kernel": jnp.array([30.0, 40.0])}, "fc1": {"kernel": jnp.array([0.0])},
           "fc1_bn": {"scale": jnp.array([0.0])}, "fc2": {"kernel": jnp.array([0.0])}}
  state = optim.set_learning_rate(tx.init(params), 1.0)
  updates, _ = tx.update(grads, state, params)
  # norm 50 -> clipped to 1: (0.6, 0.8); then + wd p (wd 0.1; 0.5 for fc1 and fc1_bn)
  np.testing.assert_allclose(updates["conv"]["kernel"], -np.array([0.6 + 0.3, 0.8 + 0.4]),
                             rtol=1e-6)
  np.testing.assert_allclose(updates["fc1"]["kernel"], [-0.5], rtol=1e-6)
  np.testing.assert_allclose(updates["fc1_bn"]["scale"], [-1.0], rtol=1e-6)
  np.testing.assert_allclose(updates["fc2"]["kernel"], [-0.1], rtol=1e-6)
  # without the options the optimizer state keeps its old structure (checkpoints, parity)
  plain = digits.get_config()
  assert (jax.tree.structure(optim.classifier_optimizer(plain).init(params))
          == jax.tree.structure(optax.inject_hyperparams(
              lambda learning_rate: optim.make("sgd", learning_rate, weight_decay=5e-4,
                                               momentum=0.9))(learning_rate=0.1).init(params)))


def test_cosine_restarts_schedule_is_mwn_py():
  c = cifar.get_config("dataset=cifar10,method=cmwnet_sl,label_file=x.npy")
  assert (c.recipe, c.model, c.lr_schedule, c.lr_restart_epoch) == (
      "cmwnet_fd", "resnet34_cmwnet", "cosine_restarts", 45)
  sched = optim.lr_schedule(c, 1)
  lr = np.asarray(sched(jnp.arange(120)), np.float64)
  np.testing.assert_allclose(lr[:46], 0.1, rtol=1e-6)     # constant, then t = 0 at epoch 45
  for start in (50, 60, 80):                              # restarts (T = 5, 10, 20, 40)
    assert lr[start] == pytest.approx(0.1, rel=1e-6) and lr[start - 1] < 0.01
  t_i, t_cur = 40, 119 - 80
  assert lr[119] == pytest.approx(1e-4 + (0.1 - 1e-4) * (1 + np.cos(np.pi * t_cur / t_i)) / 2,
                                  rel=1e-5)
  assert lr[47] == pytest.approx(1e-4 + (0.1 - 1e-4) * (1 + np.cos(np.pi * 2 / 5)) / 2, rel=1e-5)


def test_absgd_noise_cifar_recipes():
  c10 = cifar.get_config("dataset=cifar10,method=absgd,noise=asym,rate=0.4")
  validation.validate(c10)
  assert (c10.recipe, c10.model, c10.num_epochs, c10.lr_milestones, c10.batch_size) == (
      "absgd_noise", "sce_cnn", 120, (40, 80), 128)
  assert (c10.grad_clip_norm, c10.weight_decay, c10.weight_decay_overrides) == (
      5.0, 5e-3, "fc1:0.01")
  assert (c10.absgd.lam, c10.absgd.start_epoch, c10.absgd.uniform_floor) == (-2.0, 80, True)
  assert (c10.loss.name, c10.loss.sce_alpha, c10.loss.logit_tau) == ("sce", 6.0, 1.0)
  assert (c10.asym_generator, c10.meta_per_class, c10.learning_rate) == ("absgd", 0, 0.001)
  c100 = cifar.get_config("dataset=cifar100,method=absgd,noise=sym_other,rate=0.2")
  assert (c100.model, c100.learning_rate, c100.weight_decay, c100.absgd.lam) == (
      "resnet34", 0.01, 1e-2, -5.0)
  assert (c100.loss.sce_beta, c100.absgd.gamma) == (0.0, 0.5)
  sl = cifar.get_config("dataset=cifar100,method=cmwnet_sl,noise=asym,rate=0.6")
  assert (sl.asym_generator, sl.cmwnet_sl.mixup_alpha, sl.cmwnet_sl.ema_freeze_epoch) == (
      "cmwnet", 4.0, 150)
  hybrid = cifar.get_config("method=cmwnet_sl,label_file=x.npy,noise=asym,rate=0.3,hybrid=true")
  assert (hybrid.noise_on_given_labels, hybrid.asym_generator, hybrid.cmwnet_sl.warmup_epochs) \
      == (True, "plc", 45)
  with pytest.raises(ValueError, match="hybrid=true .* needs label_file"):
    cifar.get_config("method=cmwnet_sl,noise=asym,hybrid=true")


@pytest.mark.parametrize("key,value,message", [
    ("grad_clip_norm", -1.0, "grad_clip_norm must be >= 0"),
    ("weight_decay_overrides", "fc1", "weight_decay_overrides entry 'fc1' is not pattern:value"),
    ("loss.tce_q", 0.0, "loss.tce_q must be in (0, 1]"),
    ("loss.name", "gce", "unknown loss.name 'gce'; valid: ce, focal, ldam, sce, tce"),
    ("lr_min", 1.0, "lr_min 1.0 is above learning_rate"),
])
def test_bad_options_are_one_line_config_errors(key, value, message):
  c = digits.get_config()
  if key == "lr_min":
    c.lr_schedule = "cosine_restarts"
  node, leaf = (c.loss, key.split(".")[1]) if key.startswith("loss.") else (c, key)
  node[leaf] = value
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validation.validate(c)
