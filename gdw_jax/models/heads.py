"""Classifier heads: the usual linear layer, or LDAM's cosine classifier (``NormedLinear``)."""
import flax.linen as nn
import jax
import jax.numpy as jnp

HEADS = ("auto", "linear", "cosine")


def _unit_columns_init(key, shape, dtype=jnp.float32):
  """PyTorch ``uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)``: every class column has norm 1."""
  w = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
  return w / jnp.linalg.norm(w, axis=0, keepdims=True)


def _normalize(x, axis):
  """``F.normalize``: ``x / max(||x||, 1e-12)``."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


class NormedLinear(nn.Module):
  """LDAM-DRW's cosine classifier: ``z_j = <x / ||x||, W_j / ||W_j||>`` in ``[-1, 1]``, no bias."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", _unit_columns_init, (x.shape[-1], self.features), self.dtype)
    return _normalize(x.astype(self.dtype), -1) @ _normalize(w, 0)


def head_kind(config) -> str:
  """``config.classifier_head``, ``auto`` resolved: cosine when ``config.loss.name`` is LDAM
  (LDAM-DRW's ``use_norm``). A run builds its model from the config as its method sees it
  (:func:`gdw_jax.methods.with_loss_overrides`: ``method=ldam_drw`` forces ``loss.name=ldam``);
  models know no method."""
  kind = config.get("classifier_head", "auto") if config else "auto"
  if kind == "auto":
    # A model built from model options only (no loss group) has a linear head.
    ldam = bool(config) and "loss" in config and config["loss"]["name"] == "ldam"
    return "cosine" if ldam else "linear"
  return kind


def classifier_head(kind: str, num_classes: int, dtype, **dense_kwargs) -> nn.Module:
  """The last layer of a classifier; ``dense_kwargs`` go to ``nn.Dense`` (initialisers, name)."""
  if kind == "cosine":
    return NormedLinear(num_classes, dtype=dtype, name=dense_kwargs.get("name"))
  if kind != "linear":
    raise ValueError(f"unknown classifier_head {kind!r}; valid: {', '.join(HEADS)}")
  return nn.Dense(num_classes, dtype=dtype, param_dtype=dtype, **dense_kwargs)
