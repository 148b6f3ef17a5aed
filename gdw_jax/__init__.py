"""gdw_jax: meta-learned data weighting (GDW, MW-Net, ...) for noisy and imbalanced data.

As a library (docs/library.md)::

    method = gdw_jax.gdw()                                    # or mwnet(), l2rw(), cmwnet(...)
    model = gdw_jax.from_linen(module, rngs=("dropout",))     # or from_nnx(nnx_module)
    params, model_state = model.init(rng, x)
    method_state = method.init(rng, params, model_state)
    grads, model_state, method_state, aux = gdw_jax.reweighted_grads(
        method, method_state, model.apply, params, model_state, batch, meta_batch,
        lr=lr, step=step, rng=rng)                             # then your own optax update

As a framework: ``python -m gdw_jax.main --config=configs/digits.py --workdir=runs/digits``.
"""
__version__ = "0.1.0"

from gdw_jax.adapters import ModelFns, from_linen, from_nnx
from gdw_jax.api import reweighted_grads
from gdw_jax.bilevel import StepContext
from gdw_jax.losses import BaseLoss, base_loss
from gdw_jax.methods import register as register_method
from gdw_jax.methods.absgd import absgd
from gdw_jax.methods.base import DataInfo, Method, MethodSpec
from gdw_jax.methods.cmwnet import cmwnet
from gdw_jax.methods.cmwnet_sl import cmwnet_sl
from gdw_jax.methods.erm import cb, erm, focal, ldam_drw
from gdw_jax.methods.gdw import gdw
from gdw_jax.methods.l2rw import l2rw
from gdw_jax.methods.mwnet import mwnet
from gdw_jax.options import ConfigError, OptionGroup

__all__ = [
    # methods (keyword constructors with the papers' defaults)
    "erm", "focal", "cb", "ldam_drw", "l2rw", "mwnet", "cmwnet", "cmwnet_sl", "gdw", "absgd",
    # the step
    "reweighted_grads", "StepContext", "Method", "BaseLoss", "base_loss",
    # models
    "ModelFns", "from_linen", "from_nnx",
    # declaring a method for the config-driven trainer
    "MethodSpec", "OptionGroup", "DataInfo", "register_method", "ConfigError",
]
