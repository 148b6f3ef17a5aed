"""Published method recipes, applied on top of a dataset config.

    python -m gdw_jax.main --config=configs/digits.py:recipe=absgd_lt,imbalance=0.1 --workdir=...
    python -m experiments.digits_benchmark --imbalance 0.1 --methods erm,absgd@absgd_lt,...

A recipe sets the method and the method's own hyperparameters as the official code runs them
(``../shared/specs/mwnet_cmwnet.md``, ``absgd_and_imbalance_losses.md``; docs/methods.md). The
official runs are 200 (long-tail) / 300 (CMW-Net-SL) / 120 (ABSGD noise, CMW-Net PMD) epochs on
CIFAR; every epoch number here (DRW switch, ERM phase, lr milestones, warm-up) is scaled to
``config.num_epochs`` by the same fraction, so set ``num_epochs`` before applying a recipe.
Dataset-level settings (model, batch size, meta-set size of a held-out meta set) stay with the
dataset config, except where the recipe defines them (an in-train meta set needs none held out).
"""
from __future__ import annotations

from typing import Callable, Dict


def _at(config, epoch: int, total: int) -> int:
  """``epoch`` of a ``total``-epoch official run, at the same fraction of ``num_epochs``."""
  return max(1, int(round(config.num_epochs * epoch / total)))


def mwnet_noise(c):
  """``MW-Net.py`` (the "stable" script): mean loss, detached input, Adam 1e-3, wd 1e-4."""
  c.method = "mwnet"
  c.mwnet.normalise, c.mwnet.live_input = "mean", False
  c.vnet.update(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False,
                amsgrad=False)


def mwnet_wrn(c):
  """``train_WRN-28-10_Meta_PGC.py``: sum-normalised loss, SGD 1e-3 m0.9 nesterov wd 5e-4."""
  c.method = "mwnet"
  c.mwnet.normalise, c.mwnet.live_input = "sum", False
  c.vnet.update(optimizer="sgd", lr=1e-3, weight_decay=5e-4, momentum=0.9, nesterov=True,
                amsgrad=False)
  c.nesterov = True


def mwnet_imbalance(c):
  """The class-imbalance script: sum-normalised, undetached net input, SGD 1e-5, 10 meta/class."""
  c.method = "mwnet"
  c.mwnet.normalise, c.mwnet.live_input = "sum", True
  c.vnet.update(optimizer="sgd", lr=1e-5, weight_decay=5e-4, momentum=0.9, nesterov=True,
                amsgrad=False)
  c.nesterov = True
  c.meta_per_class = 10


def cmwnet_lt(c):
  """``LT1.py``: ERM for 160/200 epochs, then CMW-Net with a balanced in-train meta set redrawn
  every epoch (smallest class count per class), ``sum v l / stopgrad(sum v)``; lr x0.01 at
  160 and 180; net Adam 1e-4, wd 1e-5, amsgrad; nesterov classifier."""
  c.method = "cmwnet"
  c.cmwnet.update(warmup_epochs=_at(c, 160, 200), meta_source="train_balanced",
                  select_per_class=0, normalise="sum_detached", meta_every=1)
  c.vnet.update(optimizer="adam", lr=1e-4, weight_decay=1e-5, momentum=0.0, nesterov=False,
                amsgrad=True)
  c.lr_schedule, c.lr_decay = "step_epoch", 0.01
  c.lr_milestones = (_at(c, 160, 200), _at(c, 180, 200))
  c.nesterov = True
  c.meta_per_class = 0


def cmwnet_sl(c):
  """``cmwn.py`` (feature-independent noise): warm-up 10/300 epochs, EMA 0.997, mixup 1, meta
  step every 10 iterations on a small-loss meta set (10 per noisy class) with mixup meta CE;
  net Adam 1e-4, wd 1e-4."""
  c.method = "cmwnet_sl"
  c.cmwnet_sl.update(warmup_epochs=_at(c, 10, 300), ema_decay=0.997, mixup_alpha=1.0,
                     meta_every=10, meta_source="small_loss", select_per_class=10,
                     meta_mixup=True, pseudo_momentum=0.0)
  c.vnet.update(optimizer="adam", lr=1e-4, weight_decay=1e-4, momentum=0.0, nesterov=False,
                amsgrad=False)
  c.meta_per_class = 0


def absgd_lt(c):
  """ABSGD README (CIFAR-10-LT ``abce``): CE, then from 160/200 epochs CB weights (beta 0.9999)
  and ABSGD with lambda 5, gamma 0.7, abAlpha 0.5."""
  c.method = "absgd"
  start = _at(c, 160, 200)
  c.absgd.update(lam=5.0, init_lam=200.0, start_epoch=start, gamma=0.7, ab_alpha=0.5,
                 uniform_floor=False)
  c.loss.update(class_weights="cb", cb_beta=0.9999, drw=True, drw_epoch=start)


def absgd_noise(c):
  """ABSGD's label-noise code with CE (``ABCE``): negative lambda (-1, within the authors'
  -0.5..-5) from 80/120 epochs, a 1/B floor on the weights, gamma 0.9, abAlpha 0.5, no class
  weights."""
  c.method = "absgd"
  c.absgd.update(lam=-1.0, init_lam=200.0, start_epoch=_at(c, 80, 120), gamma=0.9,
                 ab_alpha=0.5, uniform_floor=True)
  c.loss.update(name="ce", class_weights="none", drw=False, logit_tau=0.0)


def absgd_sce(c):
  """``ABSCE`` as the authors ran CIFAR-10 asymmetric noise (deleted ``noisy_cifar10_cifar100.sh``,
  their note: 82.61 at nr 0.4): SCE alpha 6, beta 2 on logits divided by their norm
  (``class_tau 1``), lambda -2 from 80/120 epochs, gamma 0.9, abAlpha 0.5, 1/B floor."""
  absgd_noise(c)
  c.absgd.lam = -2.0
  c.loss.update(name="sce", sce_alpha=6.0, sce_beta=2.0, logit_tau=1.0)


def absgd_sce_c100(c):
  """``ABSCE`` as the authors ran CIFAR-100 symmetric noise (their note: 72.21 / 67.59 at nr
  0.2 / 0.4): alpha 2, beta 0 (i.e. 2 CE), ``class_tau 1``, lambda -5, gamma 0.5."""
  absgd_noise(c)
  c.absgd.update(lam=-5.0, gamma=0.5)
  c.loss.update(name="sce", sce_alpha=2.0, sce_beta=0.0, logit_tau=1.0)


def absgd_tce(c):
  """``ABTCE`` (truncated GCE, q 0.7, k 0.5) with the README's Clothing1M ABSGD settings:
  lambda -5, gamma 0.5, abAlpha 0.5, 1/B floor, switch at 80/120 epochs (CIFAR's)."""
  absgd_noise(c)
  c.absgd.update(lam=-5.0, gamma=0.5)
  c.loss.update(name="tce", tce_q=0.7, tce_k=0.5)


def cmwnet_sl_fd(c):
  """CMW-Net-SL of ``mwn.py`` (feature-dependent / hybrid noise, Tables 4-5): CE warm-up 45/120
  epochs, EMA 0.999, mixup alpha 4, pseudo-labels averaged 0.9 / 0.1 from the end of warm-up,
  the second weight from its own loss, meta step every 10 iterations on the 10 smallest-loss
  images per noisy class with plain CE; net Adam 1e-3, wd 1e-4."""
  c.method = "cmwnet_sl"
  c.cmwnet_sl.update(warmup_epochs=_at(c, 45, 120), ema_decay=0.999, ema_freeze_epoch=0,
                     mixup_alpha=4.0, meta_every=10, meta_source="small_loss",
                     select_per_class=10, meta_mixup=False, pseudo_momentum=0.9,
                     second_weight="own")
  c.vnet.update(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False,
                amsgrad=False)
  c.meta_per_class = 0


def ldam_drw(c):
  """LDAM-DRW: LDAM (s 30, max_m 0.5, cosine head), CB weights from 160/200 epochs, 5-epoch
  warm-up, lr x0.01 at 160 and 180."""
  c.method = "ldam_drw"
  c.loss.update(ldam_s=30.0, ldam_max_m=0.5, cb_beta=0.9999, drw_epoch=_at(c, 160, 200))
  c.lr_warmup_epochs = _at(c, 5, 200)
  c.lr_schedule, c.lr_decay = "step_epoch", 0.01
  c.lr_milestones = (_at(c, 160, 200), _at(c, 180, 200))


def proden(c):
  """PRODEN's searched ResNet setting for CIFAR-10 (``parameter_settings.txt`` L24,
  ``../shared/specs/partial_label.md`` §6): SGD lr 5e-2 constant, momentum 0.9, coupled L2 1e-3,
  drop_last (the official loader's); the official loss and update forms are options
  (``proden.log_of_softmax``, ``proden.zero_sticks``), off here. Candidate sets come from
  ``partial_rate`` / ``partial_type`` (binomial, as Fig. 9), or the data."""
  c.method = "proden"
  c.proden.update(log_of_softmax=False, zero_sticks=False)
  c.learning_rate, c.lr_schedule = 5e-2, "constant"
  c.momentum, c.nesterov, c.weight_decay = 0.9, False, 1e-3
  c.drop_last = True
  c.partial_type = "binomial"
  c.meta_per_class = 0


def proden_cli(c):
  """PRODEN ``main.py``'s command-line defaults: lr 1e-3 constant, L2 1e-5 (else as
  :func:`proden`)."""
  proden(c)
  c.learning_rate, c.weight_decay = 1e-3, 1e-5


def proden_cmwnet_stage_c(c):
  """Stage C of PRODEN -> CMW-Net (``PLL/main.py``, ``../shared/specs/partial_label.md`` §5.5):
  CMW-Net on the pseudo-labels, a fresh classifier: SGD lr 0.1, momentum 0.9, L2 5e-4, batch
  as the dataset config's, no drop_last; lr x0.1 at 80 and 100 of 120 epochs (the official
  ``-ep`` default is 500: Q11, we take the schedule's 120); plain CE warm-up for 45/120 epochs,
  then ``sum v l / stopgrad(sum v)`` with a meta step every 20 iterations on the 10
  smallest-loss samples of every pseudo-class (rebuilt every epoch, their pseudo-labels); the
  three-head weighting net (k-means on the pseudo-label class counts), Adam 1e-3, L2 1e-4.
  Not kept: the EMA copy (a diagnostic; its BN statistics never move, Q10)."""
  c.method = "cmwnet"
  c.cmwnet.update(warmup_epochs=_at(c, 45, 120), meta_source="small_loss", select_per_class=10,
                  normalise="sum_detached", meta_every=20, num_families=3)
  c.vnet.update(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False,
                amsgrad=False)
  c.learning_rate, c.momentum, c.nesterov, c.weight_decay = 0.1, 0.9, False, 5e-4
  c.lr_schedule, c.lr_decay = "step_epoch", 0.1
  c.lr_milestones = tuple(sorted({_at(c, 80, 120), _at(c, 100, 120)}))
  c.drop_last = False
  c.meta_per_class = 0


RECIPES: Dict[str, Callable] = {f.__name__: f for f in (
    proden, proden_cli, proden_cmwnet_stage_c, mwnet_noise, mwnet_wrn, mwnet_imbalance, cmwnet_lt, cmwnet_sl, cmwnet_sl_fd, absgd_lt,
    absgd_noise, absgd_sce, absgd_sce_c100, absgd_tce, ldam_drw)}


def names():
  return tuple(sorted(RECIPES))


def apply(config, name: str) -> None:
  """Apply recipe ``name`` to ``config`` in place."""
  if name not in RECIPES:
    raise ValueError(f"unknown recipe {name!r}; valid: {', '.join(names())}")
  RECIPES[name](config)
