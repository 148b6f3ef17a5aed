"""Real-world noisy datasets (ANIMAL-10N, Clothing1M, mini-WebVision, WebFG-496) with the
papers' recipes; data preparation, published numbers and commands in docs/real_noise.md.

    python -m gdw_jax.main --workdir=runs/animal_cmwnsl \\
        --config=configs/real_noise.py:dataset=animal10n,method=cmwnet_sl,root=/data/animal10n
    python -m gdw_jax.main --workdir=runs/c1m_mwnet --config=configs/real_noise.py:\\
dataset=clothing1m,method=mwnet,root=/data/clothing1m,weights=/data/resnet50-11ad3fa6.pth

Arguments (``key=value``, comma separated):

* ``dataset`` animal10n | clothing1m | mini_webvision | webfg496; ``root``: the dataset's folder
  (``data_root``); ``method`` (default: the dataset's paper method).
* ``weights``: ImageNet-pretrained torchvision ResNet-50 state dict (``init_from``; Clothing1M,
  WebFG-496, and mini-WebVision where the official C2D checkpoint is not loadable).
* ``pipeline`` memory | stream (default: memory for ANIMAL-10N's 50,000 images of 64x64, stream
  for the others); ``workers``: grain worker processes (``stream_workers``).
* ``meta_root`` (WebFG-496: the trusted class folders), ``imagenet_val`` (mini-WebVision: the
  ILSVRC12 validation folder with ``val.txt``), ``seed``, ``model``, ``epochs`` (a shorter run:
  every epoch switch and milestone is scaled to it).

Each recipe follows the official script as read (../shared/specs/mwnet_cmwnet.md §4,
absgd_and_imbalance_losses.md §1.7 and ``xjtushujun/CMW-Net`` section5); what the library does
not express is listed in the recipe's docstring and on the docs page.
"""
from configs import common

DATASETS = ("animal10n", "clothing1m", "mini_webvision", "webfg496")
DEFAULT_METHOD = {"animal10n": "cmwnet_sl", "clothing1m": "mwnet", "mini_webvision": "cmwnet_sl",
                  "webfg496": "cmwnet_sl"}
METHODS = {"animal10n": ("cmwnet_sl", "cmwnet", "mwnet", "erm"),
           "clothing1m": ("mwnet", "gdw", "absgd", "erm"),
           "mini_webvision": ("cmwnet_sl", "erm"),
           "webfg496": ("cmwnet_sl", "cmwnet", "mwnet", "erm")}
# ANIMAL-10N's class -> family map, hard-coded in acmwn*.py (k-means labels remapped).
ANIMAL_FAMILIES = (0, 1, 2, 1, 2, 2, 0, 2, 2, 1)
CLOTHING1M_MEAN = (0.6959, 0.6537, 0.6371)  # ABSGD's noisy_label/ Clothing1M normalisation
CLOTHING1M_STD = (0.3113, 0.3192, 0.3214)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _at(c, epoch: int, total: int) -> int:
  """``epoch`` of the official ``total``-epoch run at the same fraction of ``num_epochs``."""
  return max(1, int(round(c.num_epochs * epoch / total)))


def _small_loss_meta(c, method: str, warmup: int, every: int) -> None:
  """CMW-Net's meta set: the 10 smallest-loss training images of each noisy class, re-picked
  every epoch after the CE warm-up; meta step every ``every`` iterations."""
  c.cmwnet.update(warmup_epochs=warmup, meta_every=every, meta_source="small_loss",
                  select_per_class=10)
  if method == "cmwnet_sl":
    c.cmwnet_sl.update(warmup_epochs=warmup, meta_every=every, meta_source="small_loss",
                       select_per_class=10)
  c.meta_per_class = 0


def animal10n(c, method: str, epochs: int) -> None:
  """ANIMAL-10N, ``section5/ANIMAL-10N/acmwn.py`` (CMW-Net-SL), ``acmwn1.py`` (CMW-Net),
  ``acmwn2.py`` (MW-Net = the same code with one head): VGG-19-BN from scratch on the 64x64
  images, batch 128, SGD lr 0.1 **without momentum**, L2 1e-3, lr x0.2 at epochs 50 and 75 of
  100; horizontal flip, ImageNet normalisation; 20 epochs of CE first, then the meta step every
  10 iterations on the 10 smallest-loss images per noisy class (EMA teacher for SL, the model
  itself otherwise); weighting net Adam 1e-3, L2 1e-4; families hard-coded (ANIMAL_FAMILIES).
  SL: EMA 0.997, mixup alpha 1, pseudo-labels averaged 0.9 / 0.1, the second weight from its
  own loss, plain CE meta loss. Differences: the official pseudo-label memory starts at the
  one-hot noisy label (here at the first prediction after warm-up); torchvision's dropout in
  VGG's classifier is off (docs/real_noise.md). Reported: best test accuracy."""
  c.model, c.image_size, c.image_flip = "vgg19_bn", 64, True
  c.image_mean, c.image_std = IMAGENET_MEAN, IMAGENET_STD
  c.batch_size, c.meta_batch_size, c.learning_rate = 128, 128, 0.1
  c.num_epochs = epochs or 100
  c.momentum, c.nesterov, c.weight_decay = 0.0, False, 1e-3
  c.lr_schedule, c.lr_decay = "step_epoch", 0.2
  c.lr_milestones = (_at(c, 50, 100), _at(c, 75, 100))
  common.default_epoch_switches(c)
  c.vnet.update(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False,
                amsgrad=False)
  if method in ("cmwnet", "cmwnet_sl", "mwnet"):
    _small_loss_meta(c, method, _at(c, 20, 100), 10)
  if method == "mwnet":  # acmwn2.py: CMW-Net's code with a single head
    c.method = "cmwnet"
    c.cmwnet.num_families = 1
  elif method in ("cmwnet", "cmwnet_sl"):
    c.cmwnet.families = ANIMAL_FAMILIES
    c.cmwnet.normalise = "mean"
  if method == "cmwnet_sl":
    c.cmwnet_sl.update(ema_decay=0.997, mixup_alpha=1.0, pseudo_momentum=0.9,
                       second_weight="own", meta_mixup=False)
  c.prob_clamp = 1.0


def clothing1m(c, method: str, epochs: int) -> None:
  """Clothing1M with the protocol of ABSGD's released code (``noisy_label/``, the only
  Clothing1M code among the seeds): ImageNet-pretrained torchvision ResNet-50 (``weights``),
  14-way head, batch 128, SGD momentum 0.9, lr 0.005 x0.1 at epoch 5 of 10, L2 1e-3, gradient
  norm clipped at 5; Resize(256) + RandomCrop(224) + flip, its normalisation statistics;
  evaluation Resize(256) + CenterCrop(224). Trusted set: the clean validation list (MW-Net,
  GDW). ABSGD: ABSCE (alpha 0.1, beta 1), lambda -5 from epoch 5, gamma 0.5, abAlpha 0.5, the
  1/B floor (README command). MW-Net: its stable script's weighting net (Adam 1e-3, L2 1e-4,
  mean loss); the paper's own Clothing1M hyperparameters are not in the released code. GDW: its
  paper's real-data sentence (5 epochs, SGD momentum 0.9, lr 1e-3; the rest not retrieved), lr
  x0.1 at epoch 3, outer lr 100, clip 0.2. Reported: test accuracy of the last epoch."""
  c.model = "resnet50"
  c.image_size, c.image_resize, c.image_train_crop, c.image_flip = 224, 256, "random", True
  c.image_mean, c.image_std = CLOTHING1M_MEAN, CLOTHING1M_STD
  c.batch_size, c.meta_batch_size = 128, 128
  c.num_epochs = epochs or (5 if method == "gdw" else 10)
  c.momentum, c.nesterov, c.weight_decay, c.grad_clip_norm = 0.9, False, 1e-3, 5.0
  c.learning_rate = 1e-3 if method == "gdw" else 0.005
  c.lr_schedule, c.lr_decay = "step_epoch", 0.1
  c.lr_milestones = (_at(c, 3, 5),) if method == "gdw" else (_at(c, 5, 10),)
  common.default_epoch_switches(c)
  if method == "mwnet":
    c.mwnet.update(normalise="mean", live_input=False)
    c.vnet.update(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False,
                  amsgrad=False)
  if method == "gdw":
    c.vnet.update(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False)
    c.gdw.update(outer_lr=100.0, clip=0.2)
  if method == "absgd":
    c.absgd.update(lam=-5.0, init_lam=200.0, start_epoch=_at(c, 5, 10), gamma=0.5,
                   ab_alpha=0.5, uniform_floor=True)
    c.loss.update(name="sce", sce_alpha=0.1, sce_beta=1.0, logit_tau=0.0, class_weights="none",
                  drw=False)
  c.prob_clamp = 0.999 if method == "gdw" else 1.0


def mini_webvision(c, method: str, epochs: int) -> None:
  """mini-WebVision, ``section5/mini_WebVision/Resnet50_MWN_webvision.py`` (CMW-Net-SL):
  ResNet-50, batch 32, SGD momentum 0.9, L2 5e-4, lr 0.01 x0.1 at epoch 50 of 100; RandomCrop
  227 of the 256-px images + flip, evaluation CenterCrop 227 (ILSVRC12: Resize 256 first);
  ImageNet normalisation; 5 epochs of CE, then the meta step every 10 iterations on the 10
  smallest-loss images per class under the EMA teacher; EMA 0.997, mixup alpha 0.6, mixup meta
  CE (alpha 1), pseudo-labels averaged 0.9 / 0.1, the second weight from its own loss; families
  by k-means on the class counts; weighting net Adam 1e-4, L2 1e-4. Differences: the official
  start is a self-supervised WebVision checkpoint (C2D, ``pretrained/ckpt_webvision_resnet50.pth``,
  not loadable by ``init_from``; ``weights`` gives torchvision ImageNet weights instead, which
  the published number did not use); pseudo-labels start at the first prediction after
  warm-up (official: the one-hot label). Reported: WebVision and ILSVRC12 top-1 / top-5."""
  c.model = "resnet50"
  c.image_size, c.image_resize, c.image_train_crop, c.image_flip = 227, 256, "random", True
  c.image_mean, c.image_std = IMAGENET_MEAN, IMAGENET_STD
  c.batch_size, c.meta_batch_size, c.learning_rate = 32, 32, 0.01
  c.num_epochs = epochs or 100
  c.momentum, c.nesterov, c.weight_decay = 0.9, False, 5e-4
  c.lr_schedule, c.lr_decay, c.lr_milestones = "step_epoch", 0.1, (_at(c, 50, 100),)
  common.default_epoch_switches(c)
  c.vnet.update(optimizer="adam", lr=1e-4, weight_decay=1e-4, momentum=0.0, nesterov=False,
                amsgrad=False)
  if method == "cmwnet_sl":
    _small_loss_meta(c, method, _at(c, 5, 100), 10)
    c.cmwnet.family_order = "kmeans"
    c.cmwnet_sl.update(ema_decay=0.997, mixup_alpha=0.6, meta_mixup=True, meta_mixup_alpha=1.0,
                       pseudo_momentum=0.9, second_weight="own")
  c.prob_clamp = 1.0


def webfg496(c, method: str, epochs: int) -> None:
  """WebFG-496 (one of web-bird / web-aircraft / web-car). NOT the official protocol, which
  runs a bilinear CNN on VGG-16 at 448 px trained in two steps with Adam (``main_v13.py``,
  ``--net bcnn``): B-CNN and an Adam classifier are not available here. This is ResNet-50 from
  torchvision ImageNet weights (``main_v13.py``'s ``--net resnet50``) at 448 px (Resize 448 +
  RandomCrop 448 + flip; evaluation Resize 448 + CenterCrop 448), SGD momentum 0.9, lr 0.01 with
  a 5-epoch linear warm-up and per-epoch cosine over 100 epochs, L2 1e-5, batch 32; CE for the
  first 40% of the epochs (official: 40 of 200), then the meta step every 20 iterations (as
  ``main_v13.py``) on the trusted set ``meta_root`` (official: 10 clean images per class from the
  benchmark's training split); EMA 0.997, mixup alpha 0.5, pseudo-labels 0.9 / 0.1; weighting
  net Adam 1e-3, L2 1e-4. Its numbers are not comparable with the paper's. Reported: best."""
  c.model = "resnet50"
  c.image_size, c.image_resize, c.image_train_crop, c.image_flip = 448, 448, "random", True
  c.image_mean, c.image_std = IMAGENET_MEAN, IMAGENET_STD
  c.batch_size, c.meta_batch_size, c.learning_rate = 32, 32, 0.01
  c.num_epochs = epochs or 100
  c.momentum, c.nesterov, c.weight_decay = 0.9, False, 1e-5
  c.lr_schedule, c.lr_warmup_epochs = "cosine_epoch", _at(c, 5, 100)
  common.default_epoch_switches(c)
  c.vnet.update(optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False,
                amsgrad=False)
  warmup = _at(c, 40, 100)
  c.cmwnet.update(warmup_epochs=warmup, meta_every=20, meta_source="clean")
  if method == "cmwnet_sl":
    c.cmwnet_sl.update(warmup_epochs=warmup, meta_every=20, meta_source="clean",
                       ema_decay=0.997, mixup_alpha=0.5, meta_mixup=False, pseudo_momentum=0.9,
                       second_weight="own")
  if method == "mwnet":
    c.mwnet.update(normalise="mean", live_input=False)
  c.prob_clamp = 1.0


RECIPES = {"animal10n": animal10n, "clothing1m": clothing1m, "mini_webvision": mini_webvision,
           "webfg496": webfg496}


def get_config(arg=None):
  a = common.parse_arg(arg, dataset="animal10n", method="", root="", weights="", pipeline="",
                       workers=4, meta_root="", imagenet_val="", seed=0, model="", epochs=0)
  if a["dataset"] not in DATASETS:
    raise ValueError(f"unknown dataset {a['dataset']!r}; valid: {', '.join(DATASETS)}")
  method = a["method"] or DEFAULT_METHOD[a["dataset"]]
  if method not in METHODS[a["dataset"]]:
    raise ValueError(f"no {a['dataset']} recipe for method {method!r}; recipes: "
                     f"{', '.join(METHODS[a['dataset']])}")
  c = common.base_config()
  c.dataset, c.method, c.seed, c.data_root = a["dataset"], method, a["seed"], a["root"]
  c.given_labels, c.noise_type, c.noise_rate = "noisy", "none", 0.0
  c.input_pipeline = a["pipeline"] or ("memory" if a["dataset"] == "animal10n" else "stream")
  c.stream_workers = a["workers"]
  c.init_from, c.meta_root, c.imagenet_val_root = a["weights"], a["meta_root"], a["imagenet_val"]
  c.eval_batch_size = 256
  RECIPES[a["dataset"]](c, method, a["epochs"])
  if c.input_pipeline == "memory" and a["dataset"] != "animal10n":
    c.image_resize, c.image_train_crop = 0, "random"  # resize to image_size; flip on device
  if a["model"]:
    c.model = a["model"]
  c.recipe = f"{a['dataset']}_{method}"
  return c
