"""A biased training set, a clean meta set and a clean test set, built from a source + config.

Where the meta set comes from (``BiasedDataset.meta_source``):

* ``split``: drawn from the pool by its clean labels, ``meta_per_class`` per class, disjoint from
  training (digits, CIFAR, a user's own data in research mode);
* ``trusted``: the user's trusted set: given apart from the pool (npz ``x_meta``, folder
  ``meta_root``, tfds ``tfds_meta_split``), or the training samples listed in ``trusted_ids``
  (taken out of training);
* ``from_train``: drawn from the *given* labels with ``meta_from_train=true``: not known to be
  clean, and every output says so (:data:`NOT_CLEAN`);
* ``none``: given labels and no trusted set; only methods without a meta set can run.

``label_corrections`` (a reviewed ``corrections.csv``, :mod:`gdw_jax.data.corrections`) relabels
or removes given training labels before the split; the dataset keeps the record
(``label_corrections``), which ``save_labels`` writes beside ``labels.npz`` as
``corrections_applied.json``.

With given labels and no truth (``truth_known=False``) ``y_train_true`` holds the given labels
(so per-step bookkeeping has an array) and is never reported as the truth.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from absl import logging

from gdw_jax import fileio
from gdw_jax.data import corrections, corruption, noise, partial, sources

META_SOURCES = ("split", "trusted", "from_train", "none")
NOT_CLEAN = ("the meta set was drawn from the training set's given labels "
             "(meta_from_train=true), so it is not known to be clean")
NO_TEST = "there is no test set, so no test accuracy exists"


@dataclasses.dataclass
class BiasedDataset:
  name: str
  num_classes: int
  x_train: np.ndarray
  y_train: np.ndarray        # noisy labels (what the learner sees)
  y_train_true: np.ndarray   # clean labels (analysis only)
  train_indices: np.ndarray  # positions in the source's training pool
  x_meta: np.ndarray
  y_meta: np.ndarray
  meta_indices: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  corruption_matrix: np.ndarray
  augment: Optional[Callable] = None     # (rng, x) -> x on device, train and meta (see sources)
  preprocess: Optional[Callable] = None  # x -> x on device, evaluation
  # The source's training pool, shared (not copied) by every dataset built from one source:
  # x_train = x_pool[train_indices], x_meta = x_pool[meta_indices]. Runs of several seeds keep
  # these images once (gdw_jax/runs.py). None if the dataset was not built from a pool (or its
  # meta set is not in it).
  x_pool: Optional[np.ndarray] = None
  ids_train: Optional[np.ndarray] = None  # [n] str id of each training sample
  truth_known: bool = True               # False: y_train_true are the given labels, not truth
  meta_source: str = "split"             # see META_SOURCES
  class_names: Optional[Tuple[str, ...]] = None
  source_info: Optional[Dict[str, Any]] = None
  extra_tests: Optional[Dict[str, Tuple[Any, np.ndarray]]] = None  # name -> (x, y), see sources
  # What label_corrections changed (gdw_jax/data/corrections.py); written beside labels.npz.
  label_corrections: Optional[Dict[str, Any]] = None
  # Candidate sets (partial labels, gdw_jax/data/partial.py): [n, C] bool, None for single labels;
  # ``partial_info``: how they came to be (partial.summary), for data.json and the report.
  candidates: Optional[np.ndarray] = None
  partial_info: Optional[Dict[str, Any]] = None

  @property
  def has_test(self) -> bool:
    return bool(self.y_test.shape[0])

  @property
  def realised_noise_rate(self) -> Optional[float]:
    """Fraction of training labels that differ from the truth (None: truth unknown)."""
    if not self.truth_known:
      return None
    return float(self.noise_mask.mean()) if self.num_train else 0.0

  @property
  def notes(self) -> Tuple[str, ...]:
    """What a reader of the run's output must know about this data, in words."""
    out = []
    if self.meta_source == "from_train":
      out.append(NOT_CLEAN)
    if not self.truth_known:
      out.append("the training labels are used as given; their true labels are unknown")
    if not self.has_test:
      out.append(NO_TEST)
    if self.partial_info and self.partial_info.get("noise_not_applied"):
      out.append(self.partial_info["noise_not_applied"])
    return tuple(out)

  @property
  def num_train(self) -> int:
    return int(self.y_train.shape[0])

  @property
  def class_counts(self) -> np.ndarray:
    """Per-class training counts by the (noisy) labels the learner sees."""
    return np.bincount(self.y_train, minlength=self.num_classes)

  @property
  def noise_mask(self) -> np.ndarray:
    return self.y_train != self.y_train_true

  def summary(self) -> Dict[str, Any]:
    out = {
        "dataset": self.name,
        "num_classes": self.num_classes,
        "num_train": self.num_train,
        "num_meta": int(self.y_meta.shape[0]),
        # > 0 only with a meta_seed different from the split seed (official GDW behaviour)
        "num_meta_in_train": int(np.isin(self.meta_indices, self.train_indices).sum()),
        "num_test": int(self.y_test.shape[0]),
        **({"num_extra_tests": {k: int(y.shape[0]) for k, (_, y) in self.extra_tests.items()}}
           if self.extra_tests else {}),
        "realised_noise_rate": self.realised_noise_rate,
        "train_class_counts_noisy": self.class_counts.tolist(),
        "corruption_matrix": np.round(self.corruption_matrix, 6).tolist(),
        "meta_source": self.meta_source,
        "truth_known": self.truth_known,
        "notes": list(self.notes),
    }
    if self.truth_known:
      out["train_class_counts_true"] = np.bincount(
          self.y_train_true, minlength=self.num_classes).tolist()
    if self.class_names is not None:
      out["class_names"] = list(self.class_names)
    if self.source_info:
      out["source"] = self.source_info
    if self.label_corrections is not None:
      out["label_corrections"] = corrections.summary(self.label_corrections)
    if self.candidates is not None:
      out["candidates"] = self.partial_info
    return out

  def save_labels(self, path: str) -> None:
    truth = {"true_labels": self.y_train_true} if self.truth_known else {}
    if self.candidates is not None:  # partial labels: the sets beside the labels
      truth["candidates"] = self.candidates
    np.savez(path, noisy_labels=self.y_train, train_indices=self.train_indices,
             meta_indices=self.meta_indices, meta_labels=self.y_meta, test_labels=self.y_test,
             corruption_matrix=self.corruption_matrix, truth_known=self.truth_known,
             ids=self.train_ids, **truth)
    if self.label_corrections is not None:  # the record of how these labels came to be
      fileio.write_json(os.path.join(os.path.dirname(os.path.abspath(path)),
                                     corrections.APPLIED), self.label_corrections)

  @property
  def train_ids(self) -> np.ndarray:
    """One str id per training sample: the source's ids, else the position in its pool."""
    if self.ids_train is not None:
      return self.ids_train
    return self.train_indices.astype(str)


def _trusted_positions(path: str, ids: np.ndarray) -> np.ndarray:
  """Pool positions of the ids listed in ``path`` (one per line; blank lines and ``#`` comments
  are skipped). An unknown or repeated id is an error naming the line."""
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ValueError(f"trusted_ids: file {path} does not exist")
  position = {str(v): i for i, v in enumerate(ids)}
  seen: Dict[str, int] = {}
  with open(path, encoding="utf-8") as f:
    for line, text in enumerate(f, start=1):
      rid = text.split("#", 1)[0].strip()
      if not rid:
        continue
      if rid not in position:
        raise ValueError(f"trusted_ids: {path} line {line}: {rid!r} is not the id of a "
                         f"training sample")
      if rid in seen:
        raise ValueError(f"trusted_ids: {path} lists {rid!r} twice (lines {seen[rid]} and "
                         f"{line})")
      seen[rid] = line
  if not seen:
    raise ValueError(f"trusted_ids: {path} lists no id")
  return np.sort(np.asarray([position[r] for r in seen], np.int64))


def _meta_plan(config, src: sources.Source, trusted: Optional[np.ndarray]) -> str:
  """Which of :data:`META_SOURCES` this config and source give (errors for contradictions)."""
  if src.x_meta is not None and trusted is not None:
    raise ValueError("trusted_ids is set but the data already has a trusted set (x_meta / "
                     "meta_root / tfds_meta_split): give one of the two")
  if src.x_meta is not None or trusted is not None:
    if config.meta_from_train:
      raise ValueError("meta_from_train=true but a trusted set is given: drop one of the two")
    return "trusted"
  if src.truth_known:
    if config.meta_from_train:
      raise ValueError("meta_from_train=true but the labels are clean (research mode): the meta "
                       "set is drawn from them anyway; drop meta_from_train")
    return "split"
  return "from_train" if config.meta_from_train else "none"


def _check_given_noise(config, src: sources.Source) -> None:
  """Synthetic noise on top of given (maybe noisy) labels only with noise_on_given_labels."""
  given = src.y_pool_noisy is not None or not src.truth_known
  if given and config.noise_type != "none" and float(config.noise_rate) > 0 \
      and not config.noise_on_given_labels:
    raise ValueError(f"the {src.name} labels are given noisy labels, so synthetic noise "
                     f"(noise_type={config.noise_type}, noise_rate={config.noise_rate}) on top "
                     f"of them is refused: set noise_type=none, or noise_on_given_labels=true to "
                     f"add it on purpose (or given_labels=clean if the labels are clean)")


def _check_meta_classes(config, y_train, y_meta, num_classes: int, names) -> None:
  """A trusted set must have every class the training set has (or a warning, if allowed)."""
  missing = np.flatnonzero((np.bincount(y_train, minlength=num_classes) > 0)
                           & (np.bincount(y_meta, minlength=num_classes) == 0))
  if not missing.size:
    return
  which = ", ".join(f"{c}" + (f" ({names[c]})" if names else "") for c in missing[:10])
  msg = (f"the trusted set has no sample of class(es) {which}"
         f"{' ...' if missing.size > 10 else ''}, which the training set has")
  if not config.allow_missing_meta_classes:
    raise ValueError(f"{msg}; add some, or set allow_missing_meta_classes=true")
  logging.warning("%s (allow_missing_meta_classes=true)", msg)


def _corrected(config, src: sources.Source, ids: np.ndarray, trusted: Optional[np.ndarray]):
  """``(source, pool positions out of training, record)``: ``label_corrections`` applied (the
  removed samples join the trusted ones out of the pool); as given without it."""
  if not config.get("label_corrections"):
    return src, trusted, None
  src, removed, record = corrections.apply(config, src, ids, trusted)
  return src, (removed if trusted is None else np.union1d(trusted, removed)), record


def _candidate_sets(config, src: sources.Source, train_idx: np.ndarray, c, q: float):
  """``(labels the learner sees, candidate sets or None, their summary or None)``.

  ``partial_rate`` q > 0: sets generated around the clean labels (seeded by ``config.seed``),
  and the seen label is a uniform member of each (so the "noise rate" is the chance it is not the
  true one). Given sets (``src.candidates``): the split's rows, which must hold the seen label."""
  if q > 0:
    rng = np.random.default_rng([int(config.seed), 26])
    cand = partial.partialize(c.true_labels, src.num_classes, q, config.partial_type, rng)
    y = partial.draw_member(cand, rng)
    info = partial.summary(cand, c.true_labels, q, config.partial_type)
    if config.noise_type != "none" and float(config.noise_rate) > 0:
      info["noise_not_applied"] = (
          f"partial_rate={q}: the candidate sets are the labels, so noise_type="
          f"{config.noise_type} (noise_rate={config.noise_rate}) was not applied")
      logging.warning("%s", info["noise_not_applied"])
    return y, cand, info
  if src.candidates is None:
    return c.noisy_labels, None, None
  cand = partial.check_candidates(src.candidates[train_idx], len(train_idx), src.num_classes,
                                  f"{src.name} candidates", c.noisy_labels)
  truth = c.true_labels if src.truth_known else None
  return c.noisy_labels, cand, partial.summary(cand, truth, None, "")


def build(config, source: Optional[sources.Source] = None) -> BiasedDataset:
  """Load ``config.dataset`` (or use the loaded ``source``) and apply meta split, noise and
  imbalance from ``config``."""
  src = sources.load(config.dataset, config) if source is None else source
  n = src.y_pool.shape[0]
  ids = src.ids if src.ids is not None else np.arange(n).astype(str)
  trusted = _trusted_positions(config.trusted_ids, ids) if config.trusted_ids else None
  plan = _meta_plan(config, src, trusted)
  _check_given_noise(config, src)
  src, out, record = _corrected(config, src, ids, trusted)
  pool = np.arange(n) if out is None else np.setdiff1d(np.arange(n), out)
  meta_seed = int(config.meta_seed)
  class_map = None
  if config.noise_type == "asym" and float(config.noise_rate) > 0:
    class_map = noise.class_map_for(config.dataset, config.asym_generator, config.class_map,
                                    src.num_classes)
  noisy = None if src.y_pool_noisy is None else src.y_pool_noisy[pool]
  q = float(config.get("partial_rate", 0.0) or 0.0)
  if q > 0 and src.candidates is not None:
    raise ValueError(f"partial_rate={q} but the {src.name} data give candidate sets already: "
                     f"drop one of the two")
  c = corruption.make_biased_split(
      src.y_pool[pool], num_classes=src.num_classes,
      noise_type="none" if q > 0 else config.noise_type,
      noise_rate=float(config.noise_rate), imbalance_factor=float(config.imbalance_factor),
      imbalance_type=config.imbalance_type,
      meta_per_class=int(config.meta_per_class) if plan in ("split", "from_train") else 0,
      seed=int(config.seed), split_rng=config.split_rng,
      meta_seed=None if meta_seed < 0 else meta_seed, noisy_labels=noisy,
      noise_on_given_labels=bool(config.noise_on_given_labels), class_map=class_map,
      asym_generator=config.asym_generator)
  train_idx = pool[c.train_indices]
  if src.x_meta is not None:
    x_meta, y_meta = src.x_meta, src.y_meta
    meta_idx = np.full(y_meta.shape[0], -1, np.int64)  # outside the pool
  else:
    meta_idx = trusted if trusted is not None else pool[c.meta_indices]
    x_meta, y_meta = src.x_pool[meta_idx], src.y_pool[meta_idx]
  if plan == "trusted":
    _check_meta_classes(config, c.noisy_labels, y_meta, src.num_classes, src.class_names)
  y_train, cand, partial_info = _candidate_sets(config, src, train_idx, c, q)
  ds = BiasedDataset(
      name=src.name, num_classes=src.num_classes,
      x_train=src.x_pool[train_idx], y_train=y_train, y_train_true=c.true_labels,
      train_indices=train_idx, x_meta=x_meta, y_meta=y_meta, meta_indices=meta_idx,
      x_test=src.x_test, y_test=src.y_test, corruption_matrix=c.matrix, augment=src.augment,
      preprocess=src.preprocess, x_pool=src.x_pool if src.x_meta is None else None,
      ids_train=None if src.ids is None else src.ids[train_idx],
      truth_known=src.truth_known, meta_source=plan, class_names=src.class_names,
      source_info=src.info, extra_tests=src.extra_tests, label_corrections=record,
      candidates=cand, partial_info=partial_info)
  for note in (NOT_CLEAN, NO_TEST):  # said at the start of the run, and in report.md
    if note in ds.notes:
      logging.warning("%s: %s", src.name, note)
  return ds
