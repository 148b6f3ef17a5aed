"""Short runnable examples of gdw_jax as a library (docs/library.md); run from the repo root."""
