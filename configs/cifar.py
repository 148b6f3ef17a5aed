"""CIFAR-10 / CIFAR-100: noisy, long-tailed or both, each method with its published recipe.

    python -m gdw_jax.main --workdir=runs/c10_u40_gdw \
        --config=configs/cifar.py:dataset=cifar10,noise=uniform,rate=0.4,method=gdw
    python -m gdw_jax.main --workdir=runs/c100_lt100_mwnet \
        --config=configs/cifar.py:dataset=cifar100,noise=none,imbalance=0.01,method=mwnet

Arguments (``key=value``, comma separated):

* ``dataset`` cifar10 | cifar100; ``method`` any registered method.
* ``noise`` none | uniform | uniform_other | flip | flip2 | sym_exact | sym_other | asym
  (default: uniform; none with ``imbalance`` < 1, ``label_file`` or ``cifar_n``), ``rate``;
  ``asym_generator`` dividemix | cmwnet | absgd | plc (default: the recipe's paper's, else
  dividemix; gdw_jax/data/noise.py); ``imbalance`` = n_min / n_max (1: balanced),
  ``imbalance_type`` exp | step.
* ``recipe``: the published hyperparameters (below); default chosen from the method and setting.
* ``official=true``: the official code's splits: legacy-NumPy replay and the meta set drawn with
  seed 1 whatever ``seed`` is (for GDW's README runs add ``seed=100``; their meta set then
  overlaps the training set, ../shared/specs/gdw.md §3.1). Default: disjoint meta set.
* ``archive``: path to the python archive (``cifar-10-python.tar.gz``) instead of tfds;
  ``data_dir``: tfds data dir; ``label_file``: ``.npy`` noisy labels (PLC); ``cifar_n``: human
  label set (aggre_label, worse_label, random_label1..3; cifar100: noise_label);
  ``hybrid=true``: ``noise`` / ``rate`` on top of the ``label_file`` labels (CMW-Net Table 5).
* ``model`` (default: the recipe's), ``seed``.
* ``partial``: candidate sets (partial labels) with ``partial_rate`` q (binomial; no label noise):
  ``method=proden,partial=0.3`` is CMW-Net Fig. 9's PRODEN bar (docs/partial_labels.md).

Recipes (``../shared/specs/gdw.md`` §4, ``mwnet_cmwnet.md`` §3-4). Parts a recipe needs that
are method options of another module are listed in its comment.
"""
from configs import common, recipes

RECIPES = ("gdw", "mwnet_wrn", "mwnet_resnet32", "mwnet_lt", "cmwnet_lt", "cmwnet_fi",
           "cmwnet_fd", "absgd_noise", "ldam_lt", "proden")


def default_recipe(method: str, noise: str, imbalance: float, label_file: bool = False) -> str:
  """The recipe of the paper table a (method, setting) pair appears in."""
  if method == "mwnet":  # MW-Net: uniform -> WRN table, flip -> ResNet-32 table, LT table
    if imbalance < 1.0:
      return "mwnet_lt"
    return "mwnet_wrn" if noise == "uniform" else "mwnet_resnet32"
  if method in ("cmwnet", "cmwnet_sl"):
    if imbalance < 1.0:
      return "cmwnet_lt"
    return "cmwnet_fd" if label_file else "cmwnet_fi"  # PMD label files: Tables 4-5
  if method in ("absgd", "ldam_drw", "cb", "focal") and imbalance < 1.0:
    return "ldam_lt"  # the long-tail tables of LDAM-DRW / CB / ABSGD share this protocol
  if method == "absgd" and (noise != "none" or label_file):
    return "absgd_noise"
  if method == "proden":
    return "proden"
  return "gdw"  # GDW's protocol, shared by every method it compares (GDW appendix C)


def _gdw(c, k):
  """GDW (README / appendix C, gdw.md §4): ResNet-32, 80 epochs, per-epoch cosine from 0.1,
  batch 100 (meta batch 100), SGD 0.9 + L2 5e-4; VNet Adam 1e-3 + L2 1e-4; outer lr 100
  (CIFAR-10) / 1000 (CIFAR-100), clip 0.2; 1000 meta images; p clamped at 0.999. Reported
  number: mean test accuracy of the last 5 epochs (final.json ``last5_acc``)."""
  c.model = "resnet32"
  c.num_epochs, c.lr_schedule, c.learning_rate = 80, "cosine_epoch", 0.1
  common.default_epoch_switches(c)
  c.batch_size, c.meta_batch_size = 100, 100
  c.momentum, c.nesterov, c.weight_decay = 0.9, False, 5e-4
  c.meta_per_class = 1000 // k
  c.vnet.update(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False)
  c.gdw.update(outer_lr=100.0 if k == 10 else 1000.0, clip=0.2)
  c.prob_clamp = 0.999


def _method_recipe(c, name: str) -> None:
  """The method-side settings of published recipe ``name`` (``configs/recipes.py``), keeping the
  chosen method: ``recipe=...`` may run any method under another method's protocol."""
  method = c.method
  recipes.apply(c, name)
  c.method = method


def _mwnet_common(c, k):
  c.batch_size, c.meta_batch_size, c.learning_rate = 100, 100, 0.1
  c.momentum, c.weight_decay = 0.9, 5e-4
  c.lr_schedule, c.lr_decay = "step_epoch", 0.1
  c.meta_per_class = 1000 // k
  c.prob_clamp = 1.0  # the MW-Net scripts use autograd CE (no 0.999 clamp)


def _mwnet_wrn(c, k):
  """MW-Net uniform-noise table (``train_WRN-28-10_Meta_PGC.py``): WRN-28-10, batch 100, 20,000
  iterations with lr 0.1 x0.1 at iterations 18,000 and 19,000, SGD nesterov + L2 5e-4; VNet SGD
  1e-3, momentum 0.9, nesterov, L2 5e-4. Reported: best test accuracy (``best_acc``).
  Approximations: epochs of 490 steps instead of iterations (41 epochs = 20,090 steps, decays at
  epochs 37 and 39 = steps 18,130 and 19,110), and batches from per-epoch permutations instead of
  a fresh random batch every iteration. MW-Net variant: weights normalised by their batch sum
  (``mwnet.normalise='sum'``), not averaged."""
  _mwnet_common(c, k)
  c.model = "wrn28_10"
  c.num_epochs, c.lr_milestones = 41, (37, 39)
  common.default_epoch_switches(c)
  _method_recipe(c, "mwnet_wrn")  # also the nesterov classifier


def _mwnet_resnet32(c, k):
  """MW-Net ``MW-Net.py`` (the released "stable" ResNet-32 script; used for the flip table):
  120 epochs, lr 0.1 x0.1 at epochs 80 and 100, SGD 0.9 + L2 5e-4 (no nesterov); VNet Adam 1e-3
  + L2 1e-4; mean weighted loss. Reported: best test accuracy."""
  _mwnet_common(c, k)
  c.model = "resnet32"
  c.num_epochs, c.lr_milestones, c.nesterov = 120, (80, 100), False
  common.default_epoch_switches(c)
  _method_recipe(c, "mwnet_noise")


def _mwnet_lt(c, k):
  """MW-Net class-imbalance repo: ResNet-32, batch 100, 100 epochs, lr 0.1 divided by 10 from
  (0-based) epochs 79 and 89 (``adjust_learning_rate(epoch + 1)``), SGD nesterov + L2 5e-4; VNet
  SGD 1e-5, momentum 0.9, nesterov, L2 5e-4; 10 meta images per class. Reported: best accuracy.
  Not expressible here: the inner step's lr one epoch late at epochs 79 and 89. MW-Net variant:
  sum-normalised weights, weight-net input not detached."""
  _mwnet_common(c, k)
  c.model = "resnet32"
  c.num_epochs, c.lr_milestones = 100, (79, 89)
  common.default_epoch_switches(c)
  _method_recipe(c, "mwnet_imbalance")  # also nesterov and 10 meta images per class


def _cmwnet_lt(c, k):
  """CMW-Net long-tail (``section4/Class_Imbalance/LT1.py``): ResNet-32, batch 100, 200 epochs,
  lr 0.1 x0.01 at epochs 160 and 180, SGD 0.9 nesterov + L2 5e-4; weight net Adam 1e-4 + L2 1e-5,
  amsgrad. No held-out meta set (meta_per_class 0, head class keeps 5000 / 500). CMW-Net options:
  plain ERM for epochs 0-159, then reweighting (``sum v l / stopgrad(sum v)``) with a balanced
  meta set of min-class-count images per class drawn from the training set every epoch."""
  c.model = "resnet32"
  c.batch_size, c.meta_batch_size, c.learning_rate = 100, 100, 0.1
  c.num_epochs, c.momentum, c.weight_decay = 200, 0.9, 5e-4
  common.default_epoch_switches(c)
  _method_recipe(c, "cmwnet_lt")  # lr x0.01 at 160/180, nesterov, the CMW-Net options
  c.prob_clamp = 1.0


def _cmwnet_fi(c, k):
  """CMW-Net feature-independent noise (``section4/Feature-independent_Label_Noise/cmwn.py``):
  PreAct ResNet-18, batch 128, lr 0.02 x0.1 at epoch 150, 300 epochs, SGD 0.9 + L2 5e-4; weight
  net Adam 1e-4 + L2 1e-4. No held-out meta set (meta_per_class 0). CMW-Net-SL options: CE
  warm-up 10 (CIFAR-10) / 30 (CIFAR-100) epochs, EMA 0.997, mixup alpha 1 (table2.sh: 0.1 / 0.4
  / 4 for some CIFAR-100 cells: set ``--config.cmwnet_sl.mixup_alpha``), meta step every 10
  iterations on the 10 smallest-loss images per noisy class with mixup meta CE; plain CMW-Net
  gets the same small-loss meta set and schedule. The CIFAR-100 80% cell's warm-restart schedule
  (345 epochs) is not expressible here. Reported: best accuracy."""
  c.model = "preact_resnet18"
  c.batch_size, c.meta_batch_size, c.learning_rate = 128, 128, 0.02
  c.num_epochs, c.lr_schedule, c.lr_milestones, c.lr_decay = 300, "step_epoch", (150,), 0.1
  common.default_epoch_switches(c)
  c.momentum, c.nesterov, c.weight_decay = 0.9, False, 5e-4
  _method_recipe(c, "cmwnet_sl")  # no held-out meta set, the weight net's Adam, EMA, mixup
  warmup = 10 if k == 10 else 30
  c.cmwnet_sl.warmup_epochs = warmup
  c.cmwnet.update(warmup_epochs=warmup, meta_every=10, meta_source="small_loss",
                  select_per_class=10)
  c.asym_generator = "cmwnet"  # dataloader_cifar.py: whole-set draw, its 5 -> 5 map
  if c.noise_type == "asym":  # cmwn.py: EMA frozen after epoch 149; table2.sh's mixup alphas
    c.cmwnet_sl.ema_freeze_epoch = 150
    if k == 100:
      c.cmwnet_sl.mixup_alpha = {0.2: 0.4, 0.4: 0.4, 0.6: 4.0}.get(round(c.noise_rate, 2), 1.0)
  elif k == 100 and round(c.noise_rate, 2) == 0.8:
    c.cmwnet_sl.mixup_alpha = 0.1
  c.prob_clamp = 1.0


def _cmwnet_fd(c, k):
  """CMW-Net feature-dependent / hybrid noise (``section4/Feature-dependent_Label_Noise/mwn.py``,
  Tables 4-5): CMW-Net's ResNet-34 (3x3 stem with padding 0), batch 128, SGD lr 0.1, momentum
  0.9, L2 1e-3, no nesterov, 120 epochs: constant lr for the 45 CE warm-up epochs, then
  CosineAnnealingWarmRestarts(T_0 5, T_mult 2, eta_min 1e-4) stepped per epoch with ``e - 45``
  (restarts at 50, 60, 80). Data: a PLC label file (the first 45,000 images), with ``hybrid`` the
  30% noise of PLC's ``noise.py`` on top (``uniform_other``, or ``asym`` drawn by ``plc``).
  CMW-Net-SL options (``recipes.cmwnet_sl_fd``): EMA 0.999, mixup 4, pseudo-label memory 0.9,
  meta step every 10 iterations on the 10 smallest-loss images per noisy class, plain meta CE;
  net Adam 1e-3 + L2 1e-4. Plain CMW-Net gets the same warm-up and meta set; methods that need a
  held-out clean meta set (MW-Net, GDW, L2RW; no official script) take 1,000 images from the
  pool. Not reproduced: the zero-padded crop and PLC's normalisation statistics (the reflect
  padding and MW-Net statistics of ``gdw_jax/data/augment.py`` are used). Reported: best."""
  c.model = "resnet34_cmwnet"
  c.batch_size, c.meta_batch_size, c.learning_rate = 128, 128, 0.1
  c.num_epochs, c.momentum, c.nesterov, c.weight_decay = 120, 0.9, False, 1e-3
  c.lr_schedule, c.lr_restart_epoch, c.lr_restart_period = "cosine_restarts", 45, 5
  c.lr_restart_mult, c.lr_min = 2, 1e-4
  common.default_epoch_switches(c)
  _method_recipe(c, "cmwnet_sl_fd")
  c.cmwnet.update(warmup_epochs=45, meta_every=10, meta_source="small_loss",
                  select_per_class=10)
  if c.method in ("mwnet", "gdw", "l2rw"):
    c.meta_per_class = 1000 // k
  c.asym_generator = "plc"  # the hybrid noise of PLC's noise.py
  c.prob_clamp = 1.0


def _absgd_noise(c, k):
  """ABSGD's label-noise code (``noisy_label/train.py``): 120 epochs, MultiStepLR [40, 80] x0.1,
  batch 128, SGD momentum 0.9 (no nesterov), gradient norm clipped at 5 before the L2 term;
  lambda switches from 200 (plain mean) at epoch 80. CIFAR-10: the SCE paper's 8-layer CNN
  (``sce_cnn``), L2 5e-3 except 0.01 on ``fc1`` (its param groups), lr 0.001, ABSCE as in the
  authors' asymmetric run (``recipes.absgd_sce``); CIFAR-100: ResNet-34 (``resnet34``), L2 1e-2,
  lr 0.01, ABSCE with beta 0 as in their symmetric runs (``recipes.absgd_sce_c100``). No meta
  set. Noise generators: ``asym`` by ``absgd`` (per-class counts); its symmetric noise is
  ``sym_other``. Not reproduced: the CIFAR-100 run's RandomRotation(20) and the per-dataset
  normalisation statistics. Reported: best."""
  c.model = "sce_cnn" if k == 10 else "resnet34"
  c.batch_size, c.meta_batch_size = 128, 128
  c.num_epochs, c.lr_schedule, c.lr_milestones, c.lr_decay = 120, "step_epoch", (40, 80), 0.1
  common.default_epoch_switches(c)
  c.momentum, c.nesterov, c.grad_clip_norm = 0.9, False, 5.0
  if k == 10:
    c.learning_rate, c.weight_decay, c.weight_decay_overrides = 0.001, 5e-3, "fc1:0.01"
  else:
    c.learning_rate, c.weight_decay = 0.01, 1e-2
  _method_recipe(c, "absgd_sce" if k == 10 else "absgd_sce_c100")
  c.meta_per_class = 0
  c.asym_generator = "absgd"
  c.prob_clamp = 1.0


def _ldam_lt(c, k):
  """LDAM-DRW's long-tailed CIFAR protocol, shared by its CB / focal baselines and ABSGD's
  imbalance runs (``absgd_and_imbalance_losses.md`` §3): ResNet-32, batch 128, 200 epochs, lr 0.1
  with a 5-epoch linear warm-up, x0.01 at epochs 160 and 180, SGD 0.9 + L2 2e-4; DRW / ABSGD's
  second stage from epoch 160 (CB weights, beta 0.9999). ABSGD's own script drops the lr one
  epoch earlier and skips the 180 decay; this uses LDAM-DRW's. Reported: best accuracy."""
  c.model = "resnet32"
  c.batch_size, c.meta_batch_size, c.learning_rate = 128, 128, 0.1
  c.num_epochs, c.lr_schedule, c.lr_milestones, c.lr_decay = 200, "step_epoch", (160, 180), 0.01
  common.default_epoch_switches(c)
  c.lr_warmup_epochs = 5
  c.momentum, c.nesterov, c.weight_decay = 0.9, False, 2e-4
  c.meta_per_class = 10  # for meta-learning methods run on this protocol (MW-Net LT: 10/class)
  c.prob_clamp = 1.0


def _proden(c, k):
  """PRODEN as in CMW-Net Fig. 9 (``../shared/specs/partial_label.md`` §1-4, 6): the option-B
  ResNet-32 (``resnet32_proden``), batch 256 with drop_last, SGD 5e-2 constant, momentum 0.9,
  L2 1e-3 (PRODEN's searched ResNet setting), no augmentation, binomial candidate sets
  (``partial=q``; Fig. 9: CIFAR-10 0.1/0.3/0.5/0.7, CIFAR-100 0.03/0.05/0.07/0.1), 500 epochs
  (the official default; nothing says which epoch Fig. 9 reports: we report last and best).
  Not reproduced: PRODEN's normalisation statistics (0.4914.., 0.2023..; the MW-Net ones of
  gdw_jax/data/augment.py are used)."""
  del k
  c.model = "resnet32_proden"
  c.batch_size, c.num_epochs = 256, 500
  recipes.proden(c)
  common.default_epoch_switches(c)
  c.noise_type, c.noise_rate = "none", 0.0


_RECIPE_FNS = {"proden": _proden, "gdw": _gdw, "mwnet_wrn": _mwnet_wrn, "mwnet_resnet32": _mwnet_resnet32,
               "mwnet_lt": _mwnet_lt, "cmwnet_lt": _cmwnet_lt, "cmwnet_fi": _cmwnet_fi,
               "cmwnet_fd": _cmwnet_fd, "absgd_noise": _absgd_noise, "ldam_lt": _ldam_lt}


def get_config(arg=None):
  a = common.parse_arg(arg, dataset="cifar10", method="gdw", noise="", rate=0.4, imbalance=1.0,
                       imbalance_type="exp", recipe="", model="", seed=0, official=False,
                       archive="", data_dir="", label_file="", cifar_n="", asym_generator="",
                       hybrid=False, partial=0.0)
  if a["dataset"] not in ("cifar10", "cifar100"):
    raise ValueError(f"unknown dataset {a['dataset']!r}; valid: cifar10, cifar100")
  k = 10 if a["dataset"] == "cifar10" else 100
  given_labels = bool(a["label_file"] or a["cifar_n"])
  if a["hybrid"] and not (given_labels and a["noise"] not in ("", "none")):
    raise ValueError("hybrid=true adds noise on top of given labels: it needs label_file (or "
                     "cifar_n) and a noise type")
  noise = a["noise"] or ("none" if given_labels or a["imbalance"] < 1.0 else "uniform")
  recipe = a["recipe"] or default_recipe(a["method"], noise, a["imbalance"],
                                         bool(a["label_file"]))
  if recipe not in _RECIPE_FNS:
    raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")

  c = common.base_config()
  c.dataset, c.method, c.seed = a["dataset"], a["method"], a["seed"]
  c.noise_type, c.noise_rate = noise, a["rate"] if noise != "none" else 0.0
  c.noise_on_given_labels = a["hybrid"]
  c.imbalance_factor, c.imbalance_type = a["imbalance"], a["imbalance_type"]
  _RECIPE_FNS[recipe](c, k)
  if c.method == "absgd" and recipe != "absgd_noise":  # its two stages, on this protocol's epochs
    (recipes.absgd_lt if c.imbalance_factor < 1.0 else recipes.absgd_noise)(c)
  if a["asym_generator"]:
    c.asym_generator = a["asym_generator"]
  c.recipe = recipe
  if a["model"]:
    c.model = a["model"]
  if a["official"]:
    c.split_rng, c.meta_seed = "legacy", 1
  # Data source (gdw_jax/data/cifar.py).
  c.cifar_archive, c.data_dir = a["archive"], a["data_dir"]
  c.label_file, c.cifar_n = a["label_file"], a["cifar_n"]
  c.augment = recipe != "proden"   # False: the official --no-augment (normalise only)
  c.eval_batch_size = 1000
  if a["partial"]:  # candidate sets (partial labels) around the clean labels
    c.partial_rate, c.noise_type, c.noise_rate = a["partial"], "none", 0.0
  return c
