"""Streaming input with grain: each step's batches decoded and augmented in worker processes.

For data that do not fit in memory (``input_pipeline=stream``). The training pool is an
:class:`~gdw_jax.data.image_table.ImageTable` (files or tfds records); nothing is decoded up
front. The design keeps the property the whole trainer rests on, that the data of step ``t`` are
a pure function of ``(seed, epoch, step)``:

    grain.MapDataset.range(start, total_steps)           element t = global step t
        .map(StepBatch)                                   t -> decoded, augmented batches of t
        .to_iter_dataset(ReadOptions(threads, prefetch))  threads per worker
        .mp_prefetch(MultiprocessingOptions(workers))     worker processes, in order

Element ``t`` computes its own batch positions with ``pipeline.train_batch_indices`` and
``pipeline.meta_batch_indices`` (:mod:`gdw_jax.data.pipeline`, the in-memory path's functions,
so both paths train on the same samples in the same order and meta batches are unchanged), reads
those rows of the table and applies the host transforms of :mod:`gdw_jax.data.host_transforms`, each
image keyed by ``(seed, stream, epoch, step, position in the global batch)``. So a resumed run
starts the iterator at its resume step and gets exactly the batches the uninterrupted run got:
there is no iterator state to checkpoint. grain hands out the elements of its workers in index
order, so the number of workers changes the speed only.

Per-host sharding: ``local_rows(n)`` says which positions of a global batch of ``n`` rows live on
this process's devices (:func:`local_rows_of` from a sharding); each process decodes only those,
and the trainer assembles the global array (:func:`gdw_jax.parallel`).

The meta set may change at an epoch start (CMW-Net's small-loss picks from the training set):
:meth:`StreamBatches.set_meta` replaces it and the iterator restarts at the next step asked for.
Evaluation (:meth:`StreamBatches.eval_batches`) streams a table's rows in fixed-size batches
with the evaluation transform (no randomness).

A file that does not decode stops the run with an error naming it; with ``skip_bad_images`` its
image is replaced by zeros and the file is reported once (:attr:`StreamBatches.bad_images`),
since dropping it would change every later batch.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from absl import flags, logging

from gdw_jax.data import host_transforms, images, pipeline
from gdw_jax.data.image_table import ImageTable

LocalRows = Callable[[int], np.ndarray]


@dataclasses.dataclass
class Plan:
  """Which table rows every step reads, for K runs (seeds) side by side (K = 1: one run).

  ``train_rows[k, i]``: the table row of run ``k``'s training sample ``i``; ``meta_rows[k, j]``:
  the row of its meta sample ``j`` (None: no meta batches). ``local``: batch size -> positions of
  a global batch of that size this process decodes (all positions on one host).
  """
  seeds: Tuple[int, ...]
  train_rows: np.ndarray          # [K, n]
  batch_size: int
  steps_per_epoch: int
  meta_rows: Optional[np.ndarray] = None   # [K, m]
  meta_batch_size: int = 0
  local: Optional[Dict[int, np.ndarray]] = None

  @property
  def num_train(self) -> int:
    return int(self.train_rows.shape[1])

  def indices(self, step: int):
    """``(epoch, s, idx [K, B], midx [K, B_meta] or None)``: positions of step ``step``."""
    epoch, s = divmod(int(step), self.steps_per_epoch)
    idx = np.stack([pipeline.train_batch_indices(self.num_train, self.batch_size, seed, epoch, s)
                    for seed in self.seeds])
    midx = None
    if self.meta_rows is not None:
      n_meta = self.meta_rows.shape[1]
      midx = np.stack([pipeline.meta_batch_indices(n_meta, self.meta_batch_size, seed, epoch, s)
                       for seed in self.seeds])
    return epoch, s, idx, midx

  def positions(self, n: int) -> np.ndarray:
    """The positions of a global batch of ``n`` rows this process reads."""
    if self.local is None or n not in self.local:
      return np.arange(n)
    return self.local[n]

  def batch_sizes(self) -> Tuple[List[int], List[int]]:
    """Every global training and meta batch size the run can see."""
    n, b = self.num_train, self.batch_size
    train = sorted({min(b, n), n % b or b})
    meta = []
    if self.meta_rows is not None:
      m, mb = self.meta_rows.shape[1], self.meta_batch_size
      meta = sorted({min(mb, m), m % mb or mb})
    return train, meta


class StepBatch:
  """``t -> {'x': [K, b, H, W, C] uint8, 'meta_x': ..., 'idx', 'midx', 'bad'}``: the images of
  global step ``t`` that this process holds (a grain map function: picklable, stateless)."""

  def __init__(self, table: ImageTable, meta_table: Optional[ImageTable], plan: Plan,
               transform: host_transforms.Transform, skip_bad: bool):
    self.table, self.meta_table, self.plan = table, meta_table, plan
    self.transform, self.skip_bad = transform, skip_bad

  def __call__(self, step: int) -> Dict[str, np.ndarray]:
    plan = self.plan
    epoch, s, idx, midx = plan.indices(step)
    bad: List[Tuple[str, str]] = []
    out = {"step": np.int64(step), "idx": idx.astype(np.int32)}
    out["x"] = self._images(self.table, plan.train_rows, idx, host_transforms.TRAIN, epoch, s,
                            bad)
    if midx is not None:
      out["midx"] = midx.astype(np.int32)
      out["meta_x"] = self._images(self.meta_table, plan.meta_rows, midx, host_transforms.META,
                                   epoch, s, bad)
    out["bad"] = tuple(f"{name}\t{why}" for name, why in bad)
    return out

  def _images(self, table, rows, idx, stream, epoch, s, bad) -> np.ndarray:
    pos = self.plan.positions(idx.shape[1])
    t = self.transform
    out = np.zeros((idx.shape[0], len(pos), t.size, t.size, t.channels), np.uint8)
    for k, seed in enumerate(self.plan.seeds):
      for j, p in enumerate(pos):
        row = int(rows[k, idx[k, p]])
        key = host_transforms.image_key(seed, stream, epoch, s, p)
        out[k, j] = read(table, row, t, key, self.skip_bad, bad)
    return out


def read(table: ImageTable, row: int, transform, key, skip_bad: bool, bad: list) -> np.ndarray:
  """One transformed image; a file that does not decode raises, or (``skip_bad``) gives zeros
  and is noted in ``bad``."""
  try:
    return transform(table.image(row), key)
  except images.ImageError as e:
    if not skip_bad:
      raise images.ImageError(f"{e}; set skip_bad_images=true to train on without it") from None
    bad.append((table.name(row), str(e)))
    return np.zeros((transform.size, transform.size, transform.channels), np.uint8)


class EvalBatch:
  """``b -> {'x': [bs_local, H, W, C], 'n': valid rows}``: batch ``b`` of a table's rows with the
  evaluation transform, padded to ``batch_size`` by repeating the last row."""

  def __init__(self, table: ImageTable, batch_size: int, transform, skip_bad: bool,
               local: Optional[np.ndarray] = None):
    self.table, self.batch_size, self.transform = table, batch_size, transform
    self.skip_bad, self.local = skip_bad, local

  def __len__(self) -> int:
    return -(-len(self.table) // self.batch_size)

  def __call__(self, b: int) -> Dict[str, np.ndarray]:
    start = int(b) * self.batch_size
    rows = np.arange(start, min(start + self.batch_size, len(self.table)))
    padded = np.concatenate([rows, np.full(self.batch_size - len(rows), rows[-1])])
    pos = np.arange(self.batch_size) if self.local is None else self.local
    bad: List[Tuple[str, str]] = []
    x = np.stack([read(self.table, int(padded[p]), self.transform, None, self.skip_bad, bad)
                  for p in pos])
    return {"x": x, "n": np.int64(len(rows)), "start": np.int64(start),
            "bad": tuple(f"{n}\t{w}" for n, w in bad)}


@dataclasses.dataclass
class Options:
  """grain settings: ``workers`` processes (0: decode in this process), ``threads`` per worker,
  ``prefetch`` elements buffered per worker."""
  workers: int = 4
  threads: int = 2
  prefetch: int = 2

  @classmethod
  def from_config(cls, config) -> "Options":
    return cls(int(config.stream_workers), int(config.stream_threads),
               int(config.stream_prefetch))


def iterate(fn: Callable[[int], dict], start: int, stop: int, options: Options):
  """grain iterator over ``fn(start), ..., fn(stop - 1)``, in order."""
  import grain  # pylint: disable=import-outside-toplevel

  ds = grain.MapDataset.range(start, stop).map(fn)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, options.threads),
                                               prefetch_buffer_size=max(1, options.prefetch)))
  if options.workers > 0:
    _flags_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=options.workers, per_worker_buffer_size=max(1, options.prefetch)))
  return iter(it_ds)


def _flags_parsed() -> None:
  """grain's worker processes read absl flags (their defaults); outside an absl app (a script,
  a test) nothing parsed them, so take the defaults as parsed."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class StreamBatches:
  """The streamed batches of a run (see the module docstring).

  ``batches(step) -> (idx [K, B], x [K, b, H, W, C], midx or None, meta_x or None)``: host
  arrays; ``b`` rows are this process's positions of the global batch (``plan.positions``).
  Steps asked for in order are served from one prefetching iterator; any other step (a resume,
  a new meta set) restarts it there.
  """

  def __init__(self, table: ImageTable, plan: Plan, train_transform, eval_transform,
               options: Options, total_steps: int, skip_bad: bool = False,
               meta_table: Optional[ImageTable] = None):
    self.table, self.plan, self.options = table, plan, options
    self.meta_table = meta_table if meta_table is not None else table
    self.train_transform, self.eval_transform = train_transform, eval_transform
    self.total, self.skip_bad = int(total_steps), skip_bad
    self.bad_images: Dict[str, str] = {}
    self._it, self._next = None, None

  def set_meta(self, meta_rows: Optional[np.ndarray], batch_size: int,
               meta_table: Optional[ImageTable] = None,
               local: Optional[Dict[int, np.ndarray]] = None) -> None:
    """Use ``meta_rows`` ``[K, m]`` (rows of ``meta_table``, default: the training table) from
    the next step on; ``local`` adds the positions of the new meta batch sizes."""
    self.close()
    if meta_table is not None:
      self.meta_table = meta_table
    self.plan = dataclasses.replace(self.plan, meta_rows=meta_rows, meta_batch_size=batch_size,
                                    local={**(self.plan.local or {}), **(local or {})} or None)

  def batches(self, step: int):
    if self._it is None or self._next != step:
      self.close()
      fn = StepBatch(self.table, self.meta_table, self.plan, self.train_transform,
                     self.skip_bad)
      self._it = iterate(fn, step, self.total, self.options)
    out = next(self._it)
    self._next = step + 1
    if int(out["step"]) != step:  # grain's order is the index order; this guards the guarantee
      raise RuntimeError(f"stream: asked for step {step}, got {int(out['step'])}")
    self._note_bad(out["bad"])
    return out["idx"], out["x"], out.get("midx"), out.get("meta_x")

  def eval_batches(self, table: ImageTable, batch_size: int,
                   local: Optional[np.ndarray] = None) -> Iterator[Tuple[int, int, np.ndarray]]:
    """``(start, n_valid, x [b_local, H, W, C])`` for consecutive batches of ``table``'s rows
    (evaluation transform; the last batch padded with its last row)."""
    if not len(table):
      return
    fn = EvalBatch(table, batch_size, self.eval_transform, self.skip_bad, local)
    it = iterate(fn, 0, len(fn), self.options)
    try:
      for out in it:
        self._note_bad(out["bad"])
        yield int(out["start"]), int(out["n"]), out["x"]
    finally:
      _close(it)

  def decode(self, table: ImageTable) -> np.ndarray:
    """Every row of a small ``table`` with the evaluation transform, in this process."""
    out = EvalBatch(table, len(table), self.eval_transform, self.skip_bad)(0)
    self._note_bad(out["bad"])
    return out["x"]

  def _note_bad(self, bad) -> None:
    for entry in bad:
      name, why = str(entry).split("\t", 1)
      if name not in self.bad_images:
        self.bad_images[name] = why
        logging.warning("skip_bad_images=true: %s does not decode; its image is zeros (%s)",
                        name, why)

  def close(self) -> None:
    if self._it is not None:
      _close(self._it)
    self._it, self._next = None, None


def _close(it) -> None:
  close = getattr(it, "close", None)
  if close is not None:
    close()


def local_rows_of(sharding, n: int) -> np.ndarray:
  """Positions of a global ``[n, ...]`` array laid out by ``sharding`` that this process's
  devices hold (sorted, each once: replicated rows are read once per process)."""
  index_map = sharding.addressable_devices_indices_map((n,))
  rows = set()
  for index in index_map.values():
    rows.update(range(*index[0].indices(n)))
  return np.asarray(sorted(rows), np.int64)


def local_plan_rows(plan: Plan, sharding_for: Callable[[int], object]) -> Dict[int, np.ndarray]:
  """``plan.local`` for every batch size the run sees, from ``sharding_for(n)`` (the sharding
  the trainer lays a batch of ``n`` rows out with)."""
  train, meta = plan.batch_sizes()
  return {n: local_rows_of(sharding_for(n), n) for n in sorted(set(train) | set(meta))}


def stack_local(x_local: np.ndarray, positions: np.ndarray, n: int) -> Callable:
  """``shard(index) -> rows`` for ``jax.make_array_from_callback``: the rows of a global batch of
  ``n`` that this process decoded (``x_local[j]`` is global position ``positions[j]``)."""
  where = {int(p): j for j, p in enumerate(positions)}

  def shard(index):
    rows = range(*index[0].indices(n))
    return x_local[[where[r] for r in rows]][(slice(None),) + tuple(index[1:])]

  return shard


def provider_for(seeds: Sequence[int], table: ImageTable, train_rows: np.ndarray,
                 config, steps_per_epoch: int, total_steps: int,
                 local: Optional[Dict[int, np.ndarray]] = None) -> StreamBatches:
  """The :class:`StreamBatches` of ``config`` (transforms, grain options, skip_bad_images)."""
  train_t, eval_t = host_transforms.from_config(config, table.channels)
  plan = Plan(tuple(int(s) for s in seeds), np.asarray(train_rows), int(config.batch_size),
              steps_per_epoch, local=local)
  return StreamBatches(table, plan, train_t, eval_t, Options.from_config(config), total_steps,
                       skip_bad=bool(config.skip_bad_images))
