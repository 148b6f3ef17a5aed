"""Data: clean sources, corruption (noise, imbalance, meta split) and batch order."""
from gdw_jax.data import cifar  # registers the cifar10 / cifar100 sources
from gdw_jax.data import folder, npz, tfds_source  # register a user's own data: folder/npz/tfds
from gdw_jax.data import lists, real_noise  # list files; clothing1m, animal10n, ... (streamable)
from gdw_jax.data.corruption import ASYM_GENERATORS, IMBALANCE_TYPES, NOISE_TYPES, SPLIT_RNGS
from gdw_jax.data.dataset import BiasedDataset, build
from gdw_jax.data.partial import PARTIAL_TYPES
from gdw_jax.data.sources import names as dataset_names
