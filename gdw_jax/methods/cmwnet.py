"""CMW-Net: class-aware meta-weight-net (Shu et al., TPAMI 2023); spec: ``mwnet_cmwnet.md`` §4.

Classes are grouped into task families by k-means (``cmwnet.num_families``, 3) on their
training counts (by the labels the learner sees). The weighting net has a shared
``Linear(1, h) -> ReLU`` trunk and one sigmoid head per family; a sample uses the head of its
(noisy) label's family. The update is MW-Net's (plain SGD look-ahead, detached net input, weights
from the *updated* net in the real step), with ``cmwnet.normalise`` choosing the weighted
objective (``mean``; ``sum_detached`` is the long-tail script's ``sum v l / stopgrad(sum v)``).

Schedule and meta data (``cmwnet.*``):

* ``warmup_epochs``: plain (unweighted) base-loss ERM before reweighting starts (the long-tail
  recipe trains 160 of 200 epochs with ERM);
* ``meta_every``: meta step at iterations ``i % meta_every == 0`` of each epoch (1: every step);
* ``meta_source``: ``clean`` (the held-out clean meta set), ``train_balanced`` (long-tail recipe:
  every epoch, ``select_per_class`` random training samples of every class, 0 = the smallest
  class count, with their training labels) or ``small_loss`` (every epoch, the
  ``select_per_class`` smallest-loss training samples of every (noisy) class under the current
  model in eval mode, with their noisy labels);
* ``transfer``: a weighting-net file (``.npz`` export or the official ``.pth``): the net is loaded
  and frozen, no meta step and no meta set.

Families: ``family_order='size'`` (default) numbers clusters by their centre, ascending (family
0 = the classes with the fewest samples), with a seeded k-means (``kmeans_seed``, ``n_init`` 10),
so runs are deterministic; ``'kmeans'`` keeps scikit-learn's arbitrary cluster ids (the official
code, which also sets no seed); ``'official_heads'`` maps the clusters to the head order of the
released ``vnet_119.pth`` (head 0 large, 1 small, 2 moderate). ``cmwnet.families`` (one entry per
class) overrides k-means, like the hard-coded maps of the official ANIMAL-10N / WebVision runs.
If the counts take fewer distinct values than there are families, k-means uses that many
clusters (balanced data: every class in family 0).
"""
from __future__ import annotations

import numbers
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gdw_jax import bilevel, losses, options
from gdw_jax.methods import transfer as transfer_io
from gdw_jax.methods import weight_net as weight_net_lib
from gdw_jax.methods.base import Method, MethodSpec
from gdw_jax.methods.weight_net import (NORMALISE, WeightNet, real_coefficients,
                                        virtual_coefficients)
from gdw_jax.models.weight_nets import CMWNet

FAMILY_ORDERS = ("size", "kmeans", "official_heads")
META_SOURCES = ("clean", "train_balanced", "small_loss")
_OFFICIAL_HEADS = np.array([1, 2, 0])  # ascending size (small, moderate, large) -> vnet_119 head


def task_families(class_counts, num_families: int = 3, order: str = "size",
                  seed: int = 0) -> np.ndarray:
  """Family id ``[C]`` of every class from k-means on the 1-D per-class counts."""
  from sklearn.cluster import KMeans
  if order not in FAMILY_ORDERS:
    raise ValueError(f"unknown cmwnet.family_order {order!r}; valid: {', '.join(FAMILY_ORDERS)}")
  counts = np.asarray(class_counts, np.float64)[:, None]
  k = min(int(num_families), len(np.unique(counts)))
  km = KMeans(n_clusters=k, n_init=10, random_state=int(seed)).fit(counts)
  labels = km.labels_.astype(np.int64)
  if order == "kmeans":
    return labels
  rank = np.argsort(np.argsort(km.cluster_centers_[:, 0], kind="stable"), kind="stable")
  fam = rank[labels]
  if order == "official_heads":
    if k != 3:
      raise ValueError(f"family_order official_heads needs 3 clusters; the class counts take "
                       f"{len(np.unique(counts))} distinct value(s)")
    fam = _OFFICIAL_HEADS[fam]
  return fam


def family_map(class_counts, num_families: int = 3, family_order: str = "size",
               kmeans_seed: int = 0, families=()) -> np.ndarray:
  """Family id ``[C]`` of every class: the explicit ``families`` map if given, else k-means."""
  explicit = tuple(families or ())
  if explicit:
    fam = np.asarray(explicit, np.int64)
    if fam.shape != (len(class_counts),):
      raise ValueError(f"cmwnet.families needs one entry per class ({len(class_counts)}), "
                       f"got {len(explicit)}")
    return fam
  return task_families(class_counts, int(num_families), family_order, int(kmeans_seed))


def families_from_config(group, class_counts) -> np.ndarray:
  return family_map(class_counts, group["num_families"], group["family_order"],
                    group["kmeans_seed"], group["families"])


def balanced_subset(labels, per_class: int, seed: int, epoch: int) -> np.ndarray:
  """``per_class`` random positions of every class (all of a smaller class), sorted."""
  labels = np.asarray(labels)
  rng = np.random.default_rng([int(seed), 2, int(epoch)])
  out = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    out.append(rng.choice(idx, size=min(per_class, idx.size), replace=False))
  return np.sort(np.concatenate(out)).astype(np.int64)


def small_loss_subset(sample_losses, labels, per_class: int) -> np.ndarray:
  """The ``per_class`` smallest-loss positions of every (noisy) class, sorted (ties: position)."""
  labels = np.asarray(labels)
  sample_losses = np.asarray(sample_losses)
  out = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    out.append(idx[np.argsort(sample_losses[idx], kind="stable")[:per_class]])
  return np.sort(np.concatenate(out)).astype(np.int64)


def per_class_count(select_per_class: int, class_counts) -> int:
  k = int(select_per_class)
  counts = np.asarray(class_counts)
  return k if k > 0 else int(counts[counts > 0].min())


def make_epoch_start(meta_source: str, select_per_class: int, warmup_epochs: int,
                     losses_of_model):
  """``epoch_start`` for ``meta_source`` ``train_balanced`` / ``small_loss`` (None: ``clean``).

  ``losses_of_model(ectx, state) -> [n]`` gives the per-sample losses small-loss selection ranks
  by. During warm-up (no meta step runs) a random balanced set of the same size stands in.
  """
  if meta_source == "clean":
    return None

  def epoch_start(ectx, state):
    k = per_class_count(select_per_class, ectx.class_counts)
    if meta_source == "train_balanced" or ectx.epoch < warmup_epochs:
      return balanced_subset(ectx.labels, k, ectx.seed, ectx.epoch)
    return small_loss_subset(losses_of_model(ectx, state), ectx.labels, k)

  return epoch_start


def family_net(class_counts, *, num_families: int = 3, family_order: str = "size",
               kmeans_seed: int = 0, families=(), transfer: str = "", weight_net=None,
               weight_optimizer=None, dtype=jnp.float32):
  """``(WeightNet, families [C])``: CMW-Net's weighting net and the class -> family map.

  Families: ``families`` (one id per class) or k-means with ``num_families`` clusters on the
  ``class_counts`` (``family_order``, ``kmeans_seed``: :func:`task_families`). The net: the
  ``weight_net`` module (``(losses [N, 1], family [N]) -> [N, 1]``; default :class:`CMWNet`
  with ``num_families`` heads of width 100) trained by ``weight_optimizer`` (default Adam 1e-3 +
  L2 1e-4), or, if ``transfer`` names a ``.npz`` / ``.pth`` file, that net frozen.
  """
  fam = family_map(class_counts, num_families, family_order, kmeans_seed, families)
  sample = (jnp.zeros((1, 1), dtype), jnp.zeros((1,), jnp.int32))
  if transfer:
    params = transfer_io.cmwnet_from_torch(transfer_io.load(transfer))
    heads, hidden = params["heads_kernel"].shape
    if fam.max() >= heads:
      raise ValueError(f"cmwnet.transfer net has {heads} head(s) but family {fam.max()} is used")
    module = CMWNet(hidden=hidden, num_heads=heads, dtype=dtype)
    return WeightNet(module, None, dtype, sample, frozen_params=params), fam
  if weight_net is None:
    weight_net = CMWNet(hidden=weight_net_lib.OPTIONS.defaults["hidden"],
                        num_heads=int(num_families), dtype=dtype)
  return WeightNet(weight_net, weight_optimizer, dtype, sample), fam


def phase(step, steps_per_epoch: int, warmup_steps: int, meta_every: int, can_meta: bool):
  """0: warm-up (ERM), 1: reweight without a meta step, 2: meta step then reweight.

  Works on a traced step (``jnp``) and on a host integer (the trainer's static phase)."""
  xp = np if isinstance(step, (int, np.integer)) else jnp
  if not can_meta:
    return int(step >= warmup_steps) if xp is np else xp.where(step < warmup_steps, 0, 1)
  meta_now = (step % steps_per_epoch) % meta_every == 0
  if xp is np:
    return 0 if step < warmup_steps else (2 if meta_now else 1)
  return xp.where(step < warmup_steps, 0, xp.where(meta_now, 2, 1))


def run_phase(ctx, branches, idx_traced, operand):
  """``branches[phase](operand)``: the static ``ctx.phase`` when the trainer gives one (no
  conditional in the compiled step), else ``lax.switch`` on the traced phase."""
  if ctx.phase is not None:
    return branches[ctx.phase](operand), jnp.asarray(ctx.phase)
  return jax.lax.switch(idx_traced, branches, operand), idx_traced


def cmwnet(*, class_counts, steps_per_epoch: int, normalise: str = "mean",
           warmup_epochs: int = 0, meta_every: int = 1, meta_source: str = "clean",
           select_per_class: int = 0, loss: Optional[losses.BaseLoss] = None,
           dtype=jnp.float32, **net_options) -> Method:
  """CMW-Net on (noisy) training ``class_counts`` (families by k-means on them), ``steps_per_epoch``
  steps an epoch (for ``warmup_epochs`` and ``meta_every``); ``loss``: the base loss (default
  plain CE). ``net_options``: :func:`family_net`'s keywords (families, ``weight_net``,
  ``weight_optimizer``, ``transfer``). Defaults: the noisy-label recipe (every step a meta step
  on the held-out clean set); ``configs/recipes.py: cmwnet_lt`` is the long-tail one.
  """
  check_schedule(dict(warmup_epochs=warmup_epochs, meta_every=meta_every,
                      meta_source=meta_source, select_per_class=select_per_class), "")
  options.one_of(dict(normalise=normalise), "normalise", NORMALISE)
  wnet, families = family_net(class_counts, dtype=dtype, **net_options)
  fam_table = jnp.asarray(families, jnp.int32)
  spe = int(steps_per_epoch)
  warmup_epochs = int(warmup_epochs)
  warmup_steps = warmup_epochs * spe
  meta_every = int(meta_every)
  base = loss if loss is not None else losses.base_loss()
  meta_fn = None if base.logit_scale == 1.0 else bilevel.meta_loss_from(base.meta_loss)
  can_meta = not wnet.frozen

  def init(rng, params=None, model_state=None):
    del params, model_state
    return {"net": wnet.init(rng), "meta_loss": jnp.zeros((), dtype)}

  def update(ctx, state):
    b = base.logit_grad(ctx.logits, ctx.labels, ctx.step, None)
    loss = jax.lax.stop_gradient(base.per_sample(ctx.logits, ctx.labels, ctx.step))
    fam = fam_table[ctx.labels]
    n = ctx.norm_size
    net = state["net"]

    def weights(params):
      return jax.lax.stop_gradient(wnet.apply(params, loss[:, None], fam)).astype(b.dtype)

    def warmup(net):
      w = jnp.ones((loss.shape[0], 1), b.dtype)
      return b / n, net, state["meta_loss"], w

    def reweight(net):
      w = weights(net["params"])
      return b * real_coefficients(w, normalise, n), net, state["meta_loss"], w

    def meta_then_reweight(net):
      def coefficients(phi):
        return virtual_coefficients(lambda l: wnet.apply(phi, l, fam), loss, normalise, False, n)

      c, pullback = jax.vjp(coefficients, net["params"])
      meta_loss, g = bilevel.meta_gradient(ctx, b, c, norm=1, meta_loss_fn=meta_fn)
      net = wnet.step(net, pullback(g)[0])
      w = weights(net["params"])
      return (b * real_coefficients(w, normalise, n), net,
              meta_loss.astype(dtype), w)

    branches = [warmup, reweight] + ([meta_then_reweight] if can_meta else [])
    (g, net, meta_loss, w), idx = run_phase(
        ctx, branches, phase(ctx.step, spe, warmup_steps, meta_every, can_meta), net)
    aux = {"meta_loss": meta_loss, "weights": w, "meta_step": (idx == 2).astype(jnp.float32)}
    return g, {"net": net, "meta_loss": meta_loss}, aux

  def weight_fn(state, loss, labels):
    return wnet.apply(state["net"]["params"], loss[:, None], fam_table[labels])[:, 0]

  def model_losses(ectx, state):
    del state
    return ectx.train_losses(ectx.params, ectx.model_state)

  epoch_start = (make_epoch_start(meta_source, select_per_class, warmup_epochs, model_losses)
                 if can_meta else None)

  def host_phase(step):
    return phase(int(step), spe, warmup_steps, meta_every, can_meta)

  return Method("cmwnet", init, update, uses_meta=can_meta, weight_fn=weight_fn,
                phase=host_phase, epoch_start=epoch_start, label_score="weight")


# ------------------------------------------------------------------------- config and checks

NET_KEYS = ("num_families", "family_order", "kmeans_seed", "families", "transfer")
SCHEDULE_KEYS = ("warmup_epochs", "meta_every", "meta_source", "select_per_class")


def net_from_config(config, dtype):
  """:func:`family_net`'s keywords from ``config.cmwnet`` and ``config.vnet`` (shared by
  CMW-Net and CMW-Net-SL)."""
  return dict({k: config.cmwnet[k] for k in NET_KEYS},
              weight_net=CMWNet(hidden=int(config.vnet.hidden),
                                num_heads=int(config.cmwnet.num_families), dtype=dtype),
              weight_optimizer=weight_net_lib.optimizer_from(config.vnet))


def from_config(config, info, dtype=None) -> Method:
  """:func:`cmwnet` with ``config.cmwnet``, ``config.vnet`` and ``config.loss``."""
  dtype = dtype or jnp.dtype(config.dtype)
  g = config.cmwnet
  return cmwnet(class_counts=info.class_counts, steps_per_epoch=info.steps_per_epoch,
                normalise=g.normalise, **{k: g[k] for k in SCHEDULE_KEYS},
                loss=losses.make_base_loss(config, info.class_counts, info.steps_per_epoch),
                dtype=dtype, **net_from_config(config, dtype))


def check_schedule(opts, prefix) -> None:
  """Warm-up, meta step frequency and meta source (CMW-Net's and CMW-Net-SL's own keys)."""
  options.number(opts, "warmup_epochs", 0, integer=True, prefix=prefix)
  options.number(opts, "meta_every", 1, integer=True, prefix=prefix)
  options.one_of(opts, "meta_source", META_SOURCES, prefix)
  options.number(opts, "select_per_class", 0, integer=True, prefix=prefix)


def check_net_options(c, p="cmwnet.") -> None:
  """Families, net and transfer file (``config.cmwnet``, shared with CMW-Net-SL)."""
  options.number(c, "num_families", 1, integer=True, prefix=p)
  options.one_of(c, "family_order", FAMILY_ORDERS, p)
  options.number(c, "kmeans_seed", 0, integer=True, prefix=p)
  options.one_of(c, "normalise", NORMALISE, p)
  fams = tuple(c["families"] or ())
  options.check(all(isinstance(f, numbers.Integral) and 0 <= f for f in fams),
                f"{p}families must be non-negative integers, got {fams}")
  transfer = c["transfer"]
  options.check(isinstance(transfer, str), f"{p}transfer must be a path, got {transfer!r}")
  if transfer:
    options.check(transfer.endswith((".npz", ".pth", ".pt")),
                  f"{p}transfer {transfer!r}: expected a .npz export or a .pth checkpoint")
    options.check(os.path.isfile(transfer), f"{p}transfer file {transfer!r} does not exist")
  elif fams:
    options.check(max(fams) < c["num_families"], f"{p}families uses family {max(fams)} but "
                  f"num_families is {c['num_families']}")


def needs_meta(group):
  """``needs_meta`` of a method whose schedule keys are in ``config.<group>``: a held-out meta
  set unless the net is transferred (no meta step) or the meta set comes from the training set."""
  return lambda config: not config.cmwnet.transfer and config[group].meta_source == "clean"


def _validate(config) -> None:
  check_schedule(config.cmwnet, "cmwnet.")
  options.before_last_epoch(config, "cmwnet.warmup_epochs", config.cmwnet.warmup_epochs)


OPTIONS = options.OptionGroup(
    "cmwnet", dict(options.defaults_of(family_net, *NET_KEYS),
                   **options.defaults_of(cmwnet, "normalise", *SCHEDULE_KEYS)),
    lambda config: check_net_options(config.cmwnet))
SPECS = (MethodSpec("cmwnet", from_config, groups=(weight_net_lib.OPTIONS, OPTIONS),
                    validate=_validate, needs_meta=needs_meta("cmwnet")),)
