"""gdw_jax: meta-learned data weighting (GDW, MW-Net, ...) for noisy and imbalanced data."""
__version__ = "0.1.0"
