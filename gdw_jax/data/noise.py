"""Label-noise generators of the papers, beyond the corruption matrices of :mod:`corruption`.

Each function takes clean (or given) labels and a NumPy ``Generator`` and returns the noisy
labels; :func:`corruption.make_biased_split` calls them for the noise types below. The papers
use the same names for different draws, so each official generator is kept under its own name
(``../shared/specs/mwnet_cmwnet.md`` §4.3, §5; ``absgd_and_imbalance_losses.md`` §1.7):

* ``sym_exact`` (DivideMix / CMW-Net ``cmwn.py``): exactly ``int(r n)`` samples, drawn from the
  whole set, get a label drawn uniformly from all ``K`` classes; it may equal the true one, so
  about ``r (1 - 1/K)`` of the labels change.
* ``sym_other`` (ABSGD ``noisyDataset.py``): exactly ``int(int(r n) / K)`` samples of every class
  get a uniformly random *other* label.
* ``uniform_other`` (PLC ``noise.py``, CMW-Net's hybrid noise): each label independently, with
  probability ``r``, becomes a uniformly random other class (a matrix, see ``corruption``).
* ``asym``: a class map ``src -> dst`` (:data:`BUILTIN_MAPS`, or ``class_map='src:dst,...'``),
  drawn by ``asym_generator``:

  - ``dividemix`` (default): exactly ``int(r n)`` samples drawn from the *whole* set are sent
    through the map; a sample of a class the map leaves alone keeps its label, so on CIFAR-10
    (5 of 10 classes mapped) about ``r / 2`` of the labels change. This is the generator of
    DivideMix and of CMW-Net's Tables 2-3, with the map both papers describe.
  - ``cmwnet``: the same draw with CMW-Net's own CIFAR-10 map (``dataloader_cifar.py``), whose
    transition table sends dog to dog (``5 -> 5``, DivideMix has ``5 -> 3``); only 4 classes
    change. Its published asymmetric numbers were produced with this slip.
  - ``absgd``: for each source class in map order, exactly ``int(r n_s)`` of the samples that
    *currently* carry label ``s`` are relabelled ``dst``, in place. As in ABSGD's code, a swap
    (cat <-> dog) therefore relabels part of the first flip back: at r = 0.4 with 5,000 cats and
    dogs, 2,000 cats become dogs, then 2,800 of the 7,000 "dogs" become cats.
  - ``plc``: each sample of a mapped class moves with probability ``r`` (PLC ``noise.py``; also
    ABSGD's CIFAR-100 draw).

The maps: CIFAR-10 truck -> automobile, bird -> airplane, cat <-> dog, deer -> horse (every paper;
CMW-Net without dog -> cat); CIFAR-100 the "next class within the superclass", which every
official code implements as the cyclic shift inside each block of 5 consecutive class ids
(``c -> 5 floor(c/5) + (c + 1) mod 5``; these blocks are not CIFAR-100's real coarse classes);
digits the usual MNIST map 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

ASYM_GENERATORS = ("dividemix", "cmwnet", "absgd", "plc")

DIGITS_MAP = {7: 1, 2: 7, 3: 8, 5: 6, 6: 5}         # 7 -> 1 first: no 2 -> 7 -> 1 chain in 'absgd'
CIFAR10_MAP = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}        # ABSGD's order (it matters for 'absgd')
CIFAR10_CMWNET_MAP = {9: 1, 2: 0, 3: 5, 4: 7}       # dataloader_cifar.py: 5 -> 5
CIFAR100_MAP = {c: 5 * (c // 5) + (c + 1) % 5 for c in range(100)}
BUILTIN_MAPS = {"digits": DIGITS_MAP, "cifar10": CIFAR10_MAP, "cifar100": CIFAR100_MAP}


def parse_class_map(text: str, num_classes: Optional[int] = None) -> Dict[int, int]:
  """``"src:dst,src:dst"`` -> ``{src: dst}`` (order kept). Each source once; classes in range
  when ``num_classes`` is given. Raises ValueError naming ``class_map``."""
  out: Dict[int, int] = {}
  for item in text.split(","):
    item = item.strip()
    if not item:
      continue
    parts = item.split(":")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
      raise ValueError(f"class_map entry {item!r} is not src:dst with integer classes "
                       f"(e.g. class_map='2:7,3:8')")
    src, dst = (int(p) for p in parts)
    if src in out:
      raise ValueError(f"class_map gives class {src} twice")
    for c in (src, dst):
      if c < 0 or (num_classes is not None and c >= num_classes):
        raise ValueError(f"class_map class {c} is out of range for {num_classes} classes "
                         f"(0..{(num_classes or 1) - 1})")
    out[src] = dst
  if not out:
    raise ValueError("class_map is empty; give src:dst pairs, e.g. class_map='2:7,3:8'")
  return out


def class_map_for(dataset: str, generator: str, text: str, num_classes: int) -> Dict[int, int]:
  """The map ``asym`` noise uses: ``class_map`` if given, else the dataset's built-in one (the
  ``cmwnet`` generator's CIFAR-10 map keeps its ``5 -> 5`` slip)."""
  if text:
    return parse_class_map(text, num_classes)
  if generator == "cmwnet" and dataset == "cifar10":
    return dict(CIFAR10_CMWNET_MAP)
  if dataset in BUILTIN_MAPS and max(BUILTIN_MAPS[dataset]) < num_classes:
    return dict(BUILTIN_MAPS[dataset])
  raise ValueError(f"noise_type asym has no class map for dataset {dataset!r} (built in: "
                   f"{', '.join(BUILTIN_MAPS)}); give one as class_map='src:dst,...', e.g. "
                   f"--config.class_map='0:1,1:0'")


def asym_matrix(class_map: Dict[int, int], num_classes: int, rate: float) -> np.ndarray:
  """Expected transition matrix of ``asym`` noise at ``rate``: row ``s`` of a mapped class keeps
  ``1 - r`` and sends ``r`` to ``map[s]``; other rows are the identity."""
  m = np.eye(num_classes)
  for src, dst in class_map.items():
    if src != dst:
      m[src, src], m[src, dst] = 1.0 - rate, rate
  return m


def uniform_other_matrix(num_classes: int, rate: float) -> np.ndarray:
  """PLC's ``build_uniform_P``: diagonal ``1 - r``, every other class ``r / (K - 1)``."""
  k = num_classes
  if k < 2:
    raise ValueError(f"uniform_other noise needs at least 2 classes, got {k}")
  m = np.full((k, k), rate / (k - 1))
  np.fill_diagonal(m, 1.0 - rate)
  return m


def _count(rate: float, n: int) -> int:
  """``int(r n)`` as the official code computes it (truncation)."""
  return int(rate * n)


def random_other(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly random class different from each label."""
  shift = rng.integers(1, num_classes, size=labels.shape[0])
  return (labels + shift) % num_classes


def sym_exact(labels, rate: float, num_classes: int, rng: np.random.Generator):
  """``(noisy, chosen)``: ``int(r n)`` positions from the whole set get a label uniform over all
  ``K`` classes (DivideMix / CMW-Net)."""
  labels = np.asarray(labels, np.int64)
  chosen = np.sort(rng.choice(labels.shape[0], _count(rate, labels.shape[0]), replace=False))
  noisy = labels.copy()
  noisy[chosen] = rng.integers(0, num_classes, size=chosen.shape[0])
  return noisy, chosen


def sym_other(labels, rate: float, num_classes: int, rng: np.random.Generator):
  """``(noisy, chosen)``: in every class, ``int(int(r n) / K)`` positions (at most the class
  size) get a random other label (ABSGD)."""
  labels = np.asarray(labels, np.int64)
  per_class = int(_count(rate, labels.shape[0]) / num_classes)
  chosen = []
  for c in range(num_classes):
    idx = np.flatnonzero(labels == c)
    chosen.append(rng.choice(idx, min(per_class, idx.shape[0]), replace=False))
  chosen = np.sort(np.concatenate(chosen)).astype(np.int64)
  noisy = labels.copy()
  noisy[chosen] = random_other(labels[chosen], num_classes, rng)
  return noisy, chosen


def apply_map(labels: np.ndarray, class_map: Dict[int, int]) -> np.ndarray:
  table = np.arange(max(int(labels.max(initial=0)), *class_map.keys(), *class_map.values()) + 1)
  for src, dst in class_map.items():
    table[src] = dst
  return table[labels]


def asym(labels, rate: float, class_map: Dict[int, int], generator: str,
         rng: np.random.Generator) -> np.ndarray:
  """Class-map noise drawn as ``generator`` does (module docstring)."""
  labels = np.asarray(labels, np.int64)
  if generator not in ASYM_GENERATORS:
    raise ValueError(f"unknown asym_generator {generator!r}; valid: {', '.join(ASYM_GENERATORS)}")
  noisy = labels.copy()
  if generator in ("dividemix", "cmwnet"):
    chosen = rng.choice(labels.shape[0], _count(rate, labels.shape[0]), replace=False)
    noisy[chosen] = apply_map(labels[chosen], class_map)
  elif generator == "absgd":
    for src, dst in class_map.items():
      idx = np.flatnonzero(noisy == src)
      noisy[rng.choice(idx, _count(rate, idx.shape[0]), replace=False)] = dst
  else:
    move = rng.random(labels.shape[0]) < rate
    noisy[move] = apply_map(labels[move], class_map)
  return noisy
