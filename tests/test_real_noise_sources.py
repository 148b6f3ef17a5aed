"""The real-noise datasets' formats, each on a tiny fake copy written in exactly that layout:
Clothing1M (key / label lists), ANIMAL-10N (label in the file name), mini-WebVision (Google list,
WebVision and ILSVRC12 validation), WebFG-496 (class folders), and the generic list source."""
import os

import numpy as np
import pytest
from PIL import Image

from configs import common
from gdw_jax import data, validation
from gdw_jax.data import image_table, images, sources


def jpeg(path, seed, size=(24, 30)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  base = np.random.default_rng(seed).integers(0, 256, (3, 3, 3)).astype(np.uint8)
  Image.fromarray(base).resize((size[1], size[0]), Image.Resampling.BILINEAR).save(path)


def config_for(dataset, root, **overrides):
  c = common.base_config()
  c.dataset, c.data_root, c.noise_type, c.noise_rate = dataset, str(root), "none", 0.0
  c.image_size, c.progress = 8, False
  for key, value in overrides.items():
    c[key] = value
  return c


def both_pipelines(config):
  """The source built in memory and streamed: same labels, ids and (decoded) pixels."""
  mem = sources.load(config.dataset, config)
  config.input_pipeline = "stream"
  streamed = sources.load(config.dataset, config)
  assert isinstance(streamed.x_pool, image_table.ImageTable)
  np.testing.assert_array_equal(mem.y_pool, streamed.y_pool)
  np.testing.assert_array_equal(mem.ids, streamed.ids)
  for i in (0, len(mem.y_pool) - 1):
    with streamed.x_pool.image(i) as im:
      expected = np.asarray(im.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(mem.x_pool[i], expected)
  return mem, streamed


# ---- Clothing1M --------------------------------------------------------------------------------


def fake_clothing1m(root, annotations=True):
  """14 classes; noisy training keys (with one image also in the clean lists), a clean val
  (trusted) and a clean test list; images under images/<d>/<dd>/."""
  lists = os.path.join(root, "annotations") if annotations else str(root)
  os.makedirs(lists, exist_ok=True)
  noisy, clean = {}, {}
  train = [f"images/0/{i:02d}/n{i}.jpg" for i in range(10)]
  val = [f"images/1/{i:02d}/v{i}.jpg" for i in range(4)]
  test = [f"images/2/{i:02d}/t{i}.jpg" for i in range(3)]
  for i, key in enumerate(train):
    noisy[key] = (3 * i) % 14
  for i, key in enumerate(val + test + train[:1]):
    clean[key] = (5 * i + 1) % 14
  for i, key in enumerate(train + val + test):
    jpeg(os.path.join(root, key), i)
  noisy["images/9/99/not_in_train_list.jpg"] = 2  # kv files list more images than the lists

  def write(name, lines):
    with open(os.path.join(lists, name), "w") as f:
      f.write("\n".join(lines) + "\n")

  write("noisy_label_kv.txt", [f"{k} {v}" for k, v in noisy.items()])
  write("clean_label_kv.txt", [f"{k} {v}" for k, v in clean.items()])
  write("noisy_train_key_list.txt", train)
  write("clean_val_key_list.txt", val)
  write("clean_test_key_list.txt", test)
  write("category_names_eng.txt", [f"cloth{c}" for c in range(14)])
  return train, val, test, noisy, clean


def test_clothing1m_lists_clean_val_is_the_trusted_set(tmp_path):
  train, val, test, noisy, clean = fake_clothing1m(tmp_path)
  config = config_for("clothing1m", tmp_path)
  mem, streamed = both_pipelines(config)
  assert mem.num_classes == 14 and mem.class_names[3] == "cloth3"
  assert list(mem.ids) == train and not mem.truth_known
  np.testing.assert_array_equal(mem.y_pool, [noisy[k] for k in train])
  np.testing.assert_array_equal(mem.y_meta, [clean[k] for k in val])
  np.testing.assert_array_equal(mem.y_test, [clean[k] for k in test])
  assert streamed.x_meta.name(0) == os.path.join(str(tmp_path), val[0])
  ds = data.build(config_for("clothing1m", tmp_path, allow_missing_meta_classes=True))
  assert ds.meta_source == "trusted" and ds.num_train == 10 and ds.y_meta.shape == (4,)


def test_clothing1m_errors_name_the_list_and_line(tmp_path):
  train, *_ = fake_clothing1m(tmp_path, annotations=False)  # lists in data_root itself
  path = os.path.join(str(tmp_path), "noisy_train_key_list.txt")
  with open(path, "a") as f:
    f.write("images/5/55/unlabelled.jpg\n")
  with pytest.raises(images.ImageError, match=r"noisy_train_key_list.txt line 11: "
                                              r"images/5/55/unlabelled.jpg has no label"):
    sources.load("clothing1m", config_for("clothing1m", tmp_path))
  with open(os.path.join(str(tmp_path), "clean_label_kv.txt"), "a") as f:
    f.write("images/x.jpg 14\n")
  with pytest.raises(images.ImageError, match=r"clean_label_kv.txt line \d+: label 14 is "
                                              r"outside \[0, 14\)"):
    sources.load("clothing1m", config_for("clothing1m", tmp_path))


# ---- ANIMAL-10N --------------------------------------------------------------------------------


def test_animal10n_labels_from_file_names(tmp_path):
  for split, n in (("training", 12), ("testing", 5)):
    for i in range(n):
      jpeg(os.path.join(str(tmp_path), split, f"{i % 10}_{i:05d}.jpg"), i, (16, 16))
  mem, _ = both_pipelines(config_for("animal10n", tmp_path))
  assert mem.num_classes == 10 and mem.x_meta is None
  order = sorted(f"{i % 10}_{i:05d}.jpg" for i in range(12))
  assert list(mem.ids) == [f"training/{n}" for n in order]
  np.testing.assert_array_equal(mem.y_pool, [int(n.split("_")[0]) for n in order])
  np.testing.assert_array_equal(np.sort(mem.y_test), np.sort(np.arange(5) % 10))
  jpeg(os.path.join(str(tmp_path), "training", "cat.jpg"), 99)
  with pytest.raises(images.ImageError, match=r"training/cat.jpg is not named <label>_<id>"):
    sources.load("animal10n", config_for("animal10n", tmp_path))


# ---- mini-WebVision ----------------------------------------------------------------------------


def fake_mini_webvision(root, classes=4, train_per_class=3, val_per_class=2):
  """WebVision's Google list, its val_images_256 with val_filelist.txt and ILSVRC12's val
  folder with val.txt, ``classes`` classes. Returns the (path, label) lists."""
  os.makedirs(os.path.join(root, "info"), exist_ok=True)
  train = [(f"google/q{c:04d}/{i}.jpg", c) for c in range(classes)
           for i in range(train_per_class)]
  val = [(f"val{c}_{i}.jpg", c) for c in range(classes) for i in range(val_per_class)]
  inet = [(f"ILSVRC2012_val_{c}{i}.JPEG", c) for c in range(classes) for i in range(val_per_class)]
  for k, (p, _) in enumerate(train):
    jpeg(os.path.join(root, p), k)
  for k, (p, _) in enumerate(val):
    jpeg(os.path.join(root, "val_images_256", p), 100 + k)
  for k, (p, _) in enumerate(inet):
    jpeg(os.path.join(root, "imagenet", "val", p), 200 + k)
  for name, entries in (("info/train_filelist_google.txt", train),
                        ("info/val_filelist.txt", val), ("imagenet/val/val.txt", inet)):
    with open(os.path.join(root, name), "w") as f:
      f.write("".join(f"{p} {c}\n" for p, c in entries))
  return train, val, inet


def test_mini_webvision_first_classes_and_both_validation_sets(tmp_path):
  root = str(tmp_path)
  train, val, inet = fake_mini_webvision(root)
  config = config_for("mini_webvision", root, webvision_classes=2)
  mem, streamed = both_pipelines(config)
  assert mem.num_classes == 2 and len(mem.y_pool) == 6
  assert list(mem.ids) == [p for p, c in train if c < 2]
  np.testing.assert_array_equal(mem.y_test, [c for _, c in val if c < 2])
  x_in, y_in = mem.extra_tests["imagenet"]
  np.testing.assert_array_equal(y_in, [c for _, c in inet if c < 2])
  assert x_in.shape == (4, 8, 8, 3)
  assert streamed.extra_tests["imagenet"][0].name(0).endswith("imagenet/val/ILSVRC2012_val_00.JPEG")
  ds = data.build(config_for("mini_webvision", root, webvision_classes=2))
  assert ds.summary()["num_extra_tests"] == {"imagenet": 4}
  assert ds.meta_source == "none"  # CMW-Net-SL picks its meta set by small loss


# ---- WebFG-496 ---------------------------------------------------------------------------------


def test_webfg496_class_folders_with_a_trusted_folder(tmp_path):
  root = str(tmp_path / "web-aircraft")
  names = ("A320", "B737", "Cessna")
  for k, name in enumerate(names):
    for i in range(3):
      jpeg(os.path.join(root, "train", name, f"w{i}.jpg"), 10 * k + i)
      jpeg(os.path.join(root, "val", name, f"t{i}.jpg"), 100 + 10 * k + i)
      jpeg(os.path.join(str(tmp_path), "meta", name, f"m{i}.jpg"), 200 + 10 * k + i)
  config = config_for("webfg496", root, meta_root=str(tmp_path / "meta"))
  mem, _ = both_pipelines(config)
  assert mem.class_names == names and len(mem.y_pool) == 9 and len(mem.y_meta) == 9
  assert mem.ids[0] == "A320/w0.jpg"
  np.testing.assert_array_equal(mem.y_test, np.repeat(np.arange(3), 3))
  os.makedirs(os.path.join(str(tmp_path), "meta", "Boeing747"))
  with pytest.raises(images.ImageError, match="Boeing747 is not a training class"):
    sources.load("webfg496", config)


# ---- the generic list source and config errors -------------------------------------------------


def test_list_source_relative_to_data_root_or_the_list(tmp_path):
  for i in range(6):
    jpeg(os.path.join(str(tmp_path), "imgs", f"{i}.png"), i)
  (tmp_path / "train.txt").write_text("".join(f"imgs/{i}.png {i % 2}\n" for i in range(4)))
  (tmp_path / "trusted.txt").write_text("imgs/4.png 0\nimgs/5.png 1\n")
  config = config_for("list", "", train_list=str(tmp_path / "train.txt"),
                      meta_list=str(tmp_path / "trusted.txt"))
  mem, _ = both_pipelines(config)
  assert list(mem.ids) == [f"imgs/{i}.png" for i in range(4)] and len(mem.y_meta) == 2
  (tmp_path / "bad.txt").write_text("imgs/0.png zero\n")
  with pytest.raises(images.ImageError, match=r"bad.txt line 1: label 'zero' is not an integer"):
    sources.load("list", config_for("list", "", train_list=str(tmp_path / "bad.txt")))


@pytest.mark.parametrize("overrides,message", [
    (dict(input_pipeline="disk"), "unknown input_pipeline 'disk'"),
    (dict(dataset="digits", input_pipeline="stream"), "dataset=digits is held in memory"),
    (dict(input_pipeline="stream", image_size=0), "image_size must be >= 1"),
    (dict(input_pipeline="stream", image_crop_pad=4), "image_crop_pad is the in-memory"),
    (dict(input_pipeline="stream", image_resize=100), "image_resize 100 is smaller than "
                                                      "image_size 224"),
    (dict(image_train_crop="random_resized"), "image_train_crop: only with "
                                              "input_pipeline=stream"),
    (dict(image_mean=(0.5, 0.5, 0.5), image_std=(0.2, 0.2)), "image_mean has 3 values but "
                                                              "image_std 2"),
    (dict(dataset="clothing1m", data_root=""), "dataset=clothing1m needs data_root"),
    (dict(dataset="list", train_list=""), "dataset=list needs train_list"),
])
def test_config_errors(overrides, message):
  c = config_for("folder", "/data/x", image_size=224)
  for key, value in overrides.items():
    c[key] = value
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(c)


# ---- recipes -----------------------------------------------------------------------------------


def test_every_real_noise_recipe_validates_and_follows_its_script():
  from configs import real_noise
  for dataset, methods in real_noise.METHODS.items():
    for method in methods:
      c = real_noise.get_config(f"dataset={dataset},method={method},root=/data/x")
      validation.validate(c)
      assert c.dataset == dataset and c.given_labels == "noisy"
  c = real_noise.get_config("dataset=animal10n,root=/a")  # acmwn.py
  assert (c.method, c.model, c.input_pipeline, c.momentum) == ("cmwnet_sl", "vgg19_bn",
                                                               "memory", 0.0)
  assert c.lr_milestones == (50, 75) and c.lr_decay == 0.2 and c.cmwnet_sl.warmup_epochs == 20
  assert c.cmwnet.families == real_noise.ANIMAL_FAMILIES and c.cmwnet_sl.meta_every == 10
  mw = real_noise.get_config("dataset=animal10n,method=mwnet,root=/a")  # acmwn2.py: one head
  assert mw.method == "cmwnet" and mw.cmwnet.num_families == 1
  short = real_noise.get_config("dataset=animal10n,root=/a,epochs=10")
  assert short.lr_milestones == (5, 8) and short.cmwnet_sl.warmup_epochs == 2
  c = real_noise.get_config("dataset=clothing1m,method=absgd,root=/c,weights=/w.pth")
  assert (c.input_pipeline, c.image_resize, c.image_size, c.batch_size) == ("stream", 256, 224,
                                                                           128)
  assert c.init_from == "/w.pth" and c.absgd.lam == -5.0 and c.absgd.start_epoch == 5
  c = real_noise.get_config("dataset=mini_webvision,root=/w")
  assert (c.image_size, c.learning_rate, c.cmwnet_sl.mixup_alpha) == (227, 0.01, 0.6)
  with pytest.raises(ValueError, match="no mini_webvision recipe for method 'gdw'"):
    real_noise.get_config("dataset=mini_webvision,method=gdw")
