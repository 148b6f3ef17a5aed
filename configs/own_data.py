"""Your own image folder with noisy labels and a small trusted set (docs/own_data.md).

    python -m experiments.digits_folder runs/digits_folder      # the example's data (digits)
    python -m gdw_jax.main --workdir=runs/own --config=configs/own_data.py:root=runs/digits_folder
    python -m experiments.label_issues runs/own --top 25

Expected on the example (measured; 21 s of CPU time): last5_acc=94.60 best_acc=96.00 with 36%
of the training labels wrong, and label_issues.csv listing the wrong labels first: all of the top
25 are wrong, AUROC 0.993 against the example's truth.csv (docs/own_data.md).

``root`` holds ``train/<class>/<images>`` (labels as given, maybe noisy), ``trusted/<class>/...``
(labels checked; the meta set) and optionally ``test/<class>/...``. Arguments (``key=value``):

* ``root``; or ``train``, ``trusted``, ``test`` folders one by one; ``csv``: a ``path,label`` file
  overriding the train folder's labels;
* ``method`` (gdw), ``model`` (mlp; ``resnet32`` for photos), ``image_size`` (0: as stored;
  e.g. 32), ``natural`` (false; true: random crop with 4-pixel padding and horizontal flip, for
  photos), ``epochs`` (60), ``seed``.

Without a trusted set, a meta method stops with an error saying how to give one;
``--config.meta_from_train=true`` then draws the meta set from the given labels (not known to be
clean, and the run says so), or use ``method=erm``.
"""
import os

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, root="", train="", trusted="", test="", csv="", method="gdw",
                       model="mlp", image_size=0, natural=False, epochs=60, seed=0)
  c = common.base_config()
  c.dataset = "folder"
  c.method, c.model, c.seed = a["method"], a["model"], a["seed"]
  root = a["root"]
  c.data_root = a["train"] or (os.path.join(root, "train") if root else "")
  for key, name in (("meta_root", "trusted"), ("test_root", "test")):
    given = a[name]
    if not given and root and os.path.isdir(os.path.join(root, name)):
      given = os.path.join(root, name)
    c[key] = given
  c.label_csv = a["csv"]
  c.given_labels = "noisy"         # practitioner: no synthetic noise, the truth is unknown
  c.noise_type, c.noise_rate = "none", 0.0
  c.image_size = a["image_size"]
  if a["natural"]:
    c.image_crop_pad, c.image_flip = 4, True
  c.num_epochs = a["epochs"]
  c.batch_size, c.learning_rate = 100, 0.1
  c.mlp_hidden = (256, 256)        # the digits recipe (configs/digits.py)
  c.mlp_batch_norm = False
  common.default_epoch_switches(c)
  return c
