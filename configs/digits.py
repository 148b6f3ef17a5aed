"""The embedded default: scikit-learn digits (1,797 real images), 40% uniform noise, GDW, MLP.

    python -m gdw_jax.main --config=configs/digits.py --workdir=runs/digits
    python -m gdw_jax.main --config=configs/digits.py:method=mwnet,noise=flip,rate=0.3 --workdir=...
    python -m gdw_jax.main --config=configs/digits.py --config.method=erm --workdir=...
    python -m gdw_jax.main --config=configs/digits.py:recipe=absgd_lt,noise=none,imbalance=0.1 ...

Epoch switches (DRW, ABSGD's second stage, CMW-Net-SL's warm-up) and a recipe's epoch numbers
sit at the official fractions (160/200, 10/300) of ``epochs`` (60): pass ``epochs=N`` here rather
than overriding ``--config.num_epochs`` afterwards.
"""
from configs import common, recipes


def get_config(arg=None):
  a = common.parse_arg(arg, method="gdw", noise="uniform", rate=0.4, imbalance=1.0, model="mlp",
                       seed=0, epochs=60, recipe="")
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
  c.num_epochs = a["epochs"]
  c.learning_rate = 0.1
  c.mlp_hidden = (256, 256)
  c.mlp_batch_norm = False
  common.default_epoch_switches(c)
  if a["recipe"]:
    recipes.apply(c, a["recipe"])
  return c
