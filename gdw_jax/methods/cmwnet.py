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

import jax
import jax.numpy as jnp
import numpy as np

from gdw_jax import bilevel, losses
from gdw_jax.methods import transfer
from gdw_jax.methods.base import Method
from gdw_jax.methods.weight_net import WeightNet, real_coefficients, virtual_coefficients
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


def families_from_config(group, class_counts) -> np.ndarray:
  explicit = tuple(group.get("families", ()) or ())
  if explicit:
    fam = np.asarray(explicit, np.int64)
    if fam.shape != (len(class_counts),):
      raise ValueError(f"cmwnet.families needs one entry per class ({len(class_counts)}), "
                       f"got {len(explicit)}")
    return fam
  return task_families(class_counts, int(group.num_families), group.family_order,
                       int(group.kmeans_seed))


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


def per_class_count(group, class_counts) -> int:
  k = int(group.get("select_per_class", 0))
  counts = np.asarray(class_counts)
  return k if k > 0 else int(counts[counts > 0].min())


def make_epoch_start(group, warmup_epochs: int, losses_of_model):
  """``epoch_start`` for ``meta_source`` ``train_balanced`` / ``small_loss`` (None: ``clean``).

  ``losses_of_model(ectx, state) -> [n]`` gives the per-sample losses small-loss selection ranks
  by. During warm-up (no meta step runs) a random balanced set of the same size stands in.
  """
  source = group.meta_source
  if source == "clean":
    return None

  def epoch_start(ectx, state):
    k = per_class_count(group, ectx.class_counts)
    if source == "train_balanced" or ectx.epoch < warmup_epochs:
      return balanced_subset(ectx.labels, k, ectx.seed, ectx.epoch)
    return small_loss_subset(losses_of_model(ectx, state), ectx.labels, k)

  return epoch_start


def weight_net(config, info, dtype, num_heads=None):
  """The CMW-Net weighting net (frozen if ``cmwnet.transfer`` names a file) and class families."""
  group = config.cmwnet
  families = families_from_config(group, info.class_counts)
  sample = (jnp.zeros((1, 1), dtype), jnp.zeros((1,), jnp.int32))
  path = group.get("transfer", "")
  if path:
    params = transfer.cmwnet_from_torch(transfer.load(path))
    heads, hidden = params["heads_kernel"].shape
    if families.max() >= heads:
      raise ValueError(f"cmwnet.transfer net has {heads} head(s) but family {families.max()} "
                       "is used")
    module = CMWNet(hidden=hidden, num_heads=heads, dtype=dtype)
    return WeightNet(config.vnet, dtype, module, sample, frozen_params=params), families
  heads = int(num_heads or group.num_families)
  module = CMWNet(hidden=int(config.vnet.hidden), num_heads=heads, dtype=dtype)
  return WeightNet(config.vnet, dtype, module, sample), families


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


def make(config, info, dtype=None) -> Method:
  dtype = dtype or jnp.dtype(config.get("dtype", "float32"))
  group = config.cmwnet
  wnet, families = weight_net(config, info, dtype)
  fam_table = jnp.asarray(families, jnp.int32)
  normalise = group.normalise
  spe = int(info.steps_per_epoch)
  warmup_epochs = int(group.warmup_epochs)
  warmup_steps = warmup_epochs * spe
  meta_every = int(group.meta_every)
  base = losses.make_base_loss(config, info.class_counts, spe, "cmwnet")
  meta_fn = None if base.logit_scale == 1.0 else bilevel.meta_loss_from(base.meta_loss)
  can_meta = not wnet.frozen

  def init(rng):
    return {"net": wnet.init(rng), "meta_loss": jnp.zeros((), dtype)}

  def update(ctx, state):
    b = base.logit_grad(ctx.logits, ctx.labels, ctx.step, None)
    loss = jax.lax.stop_gradient(base.per_sample(ctx.logits, ctx.labels, ctx.step))
    fam = fam_table[ctx.labels]
    n = ctx.batch_size
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

  epoch_start = make_epoch_start(group, warmup_epochs, model_losses) if can_meta else None
  def host_phase(step):
    return phase(int(step), spe, warmup_steps, meta_every, can_meta)

  return Method("cmwnet", init, update, uses_meta=can_meta, weight_fn=weight_fn,
                phase=host_phase, epoch_start=epoch_start, label_score="weight")
