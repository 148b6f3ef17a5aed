"""The embedded default: scikit-learn digits (1,797 real images), 40% uniform noise, GDW, MLP.

    python -m gdw_jax.main --config=configs/digits.py --workdir=runs/digits
    python -m gdw_jax.main --config=configs/digits.py:method=mwnet,noise=flip,rate=0.3 --workdir=...
    python -m gdw_jax.main --config=configs/digits.py --config.method=erm --workdir=...
    python -m gdw_jax.main --config=configs/digits.py:recipe=absgd_lt,noise=none,imbalance=0.1 ...
    python -m gdw_jax.main --config=configs/digits.py:noise=asym,rate=0.4 --workdir=...
    python -m gdw_jax.main --config=configs/digits.py:label_file=pmd.npy --workdir=...

``noise``: any noise type (``asym`` uses the MNIST map 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1 drawn by
``asym_generator``); default uniform, none with a ``label_file`` (one label per pool image, e.g.
from ``experiments/make_pmd_noise.py``); ``hybrid=true`` adds ``noise`` on top of it.

Epoch switches (DRW, ABSGD's second stage, CMW-Net-SL's warm-up) and a recipe's epoch numbers
sit at the official fractions (160/200, 10/300) of ``epochs`` (60): pass ``epochs=N`` here rather
than overriding ``--config.num_epochs`` afterwards.
"""
from configs import common, recipes


def get_config(arg=None):
  a = common.parse_arg(arg, method="gdw", noise="", rate=0.4, imbalance=1.0, model="mlp",
                       seed=0, epochs=60, recipe="", label_file="", hybrid=False,
                       asym_generator="dividemix")
  c = common.base_config()
  c.dataset = "digits"
  c.method = a["method"]
  c.model = a["model"]
  c.noise_type = a["noise"] or ("none" if a["label_file"] else "uniform")
  c.noise_rate = a["rate"]
  c.label_file, c.noise_on_given_labels = a["label_file"], a["hybrid"]
  c.asym_generator = a["asym_generator"]
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
