"""The embedded default: scikit-learn digits (1,797 real images), 40% uniform noise, GDW, MLP.

    python -m gdw_jax.main --config=configs/digits.py --workdir=runs/digits
    python -m gdw_jax.main --config=configs/digits.py:method=mwnet,noise=flip,rate=0.3 --workdir=...
    python -m gdw_jax.main --config=configs/digits.py --config.method=erm --workdir=...
    python -m gdw_jax.main --config=configs/digits.py:recipe=absgd_lt,noise=none,imbalance=0.1 ...

Epoch switches of the long-tail methods (DRW, ABSGD's second stage, CMW-Net-SL's warm-up) are
set for 60 epochs at the official fractions (160/200, 10/300).
"""
from configs import common, recipes


def get_config(arg=None):
  a = common.parse_arg(arg, method="gdw", noise="uniform", rate=0.4, imbalance=1.0, model="mlp",
                       seed=0, recipe="")
  c = common.base_config()
  c.dataset = "digits"
  c.method = a["method"]
  c.model = a["model"]
  c.noise_type = a["noise"]
  c.noise_rate = a["rate"]
  c.imbalance_factor = a["imbalance"]
  c.seed = a["seed"]
  c.digits_test_size = 500
  c.meta_per_class = 10
  c.batch_size = 100
  c.num_epochs = 60
  c.learning_rate = 0.1
  c.mlp_hidden = (256, 256)
  c.mlp_batch_norm = False
  c.loss.drw_epoch = 48
  c.absgd.start_epoch = 48
  c.cmwnet_sl.warmup_epochs = 2
  if a["recipe"]:
    recipes.apply(c, a["recipe"])
  return c
