"""Data: clean sources, corruption (noise, imbalance, meta split) and batch order."""
from gdw_jax.data.corruption import IMBALANCE_TYPES, NOISE_TYPES
from gdw_jax.data.dataset import BiasedDataset, build
from gdw_jax.data.sources import names as dataset_names
