"""Streaming input: the host transforms, grain's step-indexed batches (equal to the in-memory
path's, any worker count, restartable at any step), per-host rows, tfds records, bad files."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from configs import common
from gdw_jax import data
from gdw_jax.data import host_transforms as ht
from gdw_jax.data import image_table, images, pipeline, stream

CLASSES = ("ant", "bee", "cat")


def write_jpegs(root, per_class=7, seed=0, sizes=((31, 40), (36, 30), (44, 44))):
  """``root/<class>/<i>.jpg`` of varying sizes (smooth content, so JPEG keeps it recognisable)."""
  rng = np.random.default_rng(seed)
  for c, name in enumerate(CLASSES):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      h, w = sizes[(i + c) % len(sizes)]
      base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
      im = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
      im.save(os.path.join(root, name, f"{i:02d}.jpg"), quality=90)
  return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return write_jpegs(str(tmp_path_factory.mktemp("jpegs")))


def folder_config(root, **overrides):
  c = common.base_config()
  c.dataset, c.data_root, c.noise_type, c.noise_rate = "folder", root, "none", 0.0
  c.meta_from_train, c.meta_per_class = True, 2
  c.image_size, c.batch_size, c.progress = 16, 4, False
  for key, value in overrides.items():
    c[key] = value
  return c


# ---- host transforms --------------------------------------------------------------------------


def test_eval_transform_without_resize_is_the_in_memory_decode(folder):
  path = os.path.join(folder, "bee", "00.jpg")
  t = ht.Transform(size=16, train=False)
  expected, _ = images.decode(path, (16, 16), 3)
  with Image.open(path) as im:
    np.testing.assert_array_equal(t(im), expected)


def test_torchvision_geometry():
  # Resize(256) of 300x200 (w x h) keeps the ratio with int(): 384x256; CenterCrop's rounding
  im = Image.new("RGB", (300, 200))
  assert ht.resize_shorter(im, 256).size == (384, 256)
  assert ht.center_crop_corner(257, 300, 224) == (int(round(33 / 2)), 38)
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = ht.random_resized_box(rng, 120, 90, 0.08)
    assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 90
    area = h * w / (120 * 90)
    ratio = w / h
    # rounding of sides a few pixels long moves area and ratio a little past the bounds
    assert 0.08 * 0.8 <= area <= 1.0 and 3 / 4 * 0.85 <= ratio <= 4 / 3 * 1.15
  # no try fits a 1000x10 strip: the fallback is the centred crop clamped to ratio 4/3
  assert ht.random_resized_box(np.random.default_rng(0), 10, 1000) == (0, 493, 10, 13)


def test_random_transforms_are_a_pure_function_of_the_key(folder):
  t = ht.Transform(size=16, resize=20, crop="random_resized", flip=True, jitter=0.4)
  with Image.open(os.path.join(folder, "cat", "03.jpg")) as im:
    a = t(im, ht.image_key(0, ht.TRAIN, 1, 2, 3))
    b = t(im, ht.image_key(0, ht.TRAIN, 1, 2, 3))
    others = [t(im, ht.image_key(0, ht.TRAIN, 1, 2, p)) for p in range(4, 10)]
  np.testing.assert_array_equal(a, b)
  assert a.shape == (16, 16, 3) and a.dtype == np.uint8
  assert all(not np.array_equal(a, o) for o in others)


def test_flip_mirrors_and_center_crop_has_no_randomness():
  x = np.arange(20 * 24 * 3, dtype=np.uint8).reshape(20, 24, 3)
  im = Image.fromarray(x)
  t = ht.Transform(size=16, resize=20, crop="center", flip=True)
  outs = [t(im, (0, 0, 0, 0, p)) for p in range(16)]
  plain = ht.Transform(size=16, resize=20, crop="center")(im, (0, 0, 0, 0, 0))
  flipped = [o for o in outs if not np.array_equal(o, plain)]
  assert 0 < len(flipped) < 16  # both happen over 16 keys (each with probability 1/2)
  for o in flipped:
    np.testing.assert_array_equal(o, plain[:, ::-1])


# ---- stream == memory -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both(folder):
  """The folder built in memory and as a stream (same config otherwise)."""
  mem = data.build(folder_config(folder))
  streamed = data.build(folder_config(folder, input_pipeline="stream", stream_workers=0))
  return mem, streamed


def provider(ds, config, meta=True, start_total=None, **options):
  spe = pipeline.steps_per_epoch(ds.num_train, config.batch_size)
  total = start_total or 3 * spe
  sb = stream.provider_for([config.seed], ds.x_train, np.arange(ds.num_train)[None], config,
                           spe, total)
  sb.options = stream.Options(**{**dict(workers=0, threads=1, prefetch=1), **options})
  if meta:
    sb.set_meta(np.arange(ds.y_meta.shape[0])[None], 3, meta_table=ds.x_meta)
  return sb, spe


def test_stream_and_memory_give_the_same_batches(folder, both):
  mem, streamed = both
  assert isinstance(streamed.x_train, image_table.ImageTable)
  assert streamed.x_train.shape == mem.x_train.shape
  np.testing.assert_array_equal(streamed.y_train, mem.y_train)
  np.testing.assert_array_equal(streamed.train_ids, mem.train_ids)
  config = folder_config(folder, input_pipeline="stream")
  sb, spe = provider(streamed, config)
  n, n_meta = mem.num_train, mem.y_meta.shape[0]
  assert n % config.batch_size  # the last batch of an epoch is smaller: covered
  for t in range(2 * spe):
    idx, x, midx, meta_x = sb.batches(t)
    epoch, s = divmod(t, spe)
    np.testing.assert_array_equal(idx[0], pipeline.train_batch_indices(n, 4, 0, epoch, s))
    np.testing.assert_array_equal(midx[0], pipeline.meta_batch_indices(n_meta, 3, 0, epoch, s))
    np.testing.assert_array_equal(x[0], mem.x_train[idx[0]])
    np.testing.assert_array_equal(meta_x[0], mem.x_meta[midx[0]])
  sb.close()


def test_worker_processes_and_restarts_change_nothing(folder, both):
  """Two grain workers with random transforms give what one process gives, and a provider
  started at step t (a resumed run) gives the uninterrupted run's batches from t on."""
  _, streamed = both
  config = folder_config(folder, input_pipeline="stream", image_resize=20,
                         image_train_crop="random_resized", image_flip=True,
                         image_color_jitter=0.3)
  ref, spe = provider(streamed, config)
  steps = range(spe - 2, spe + 3)  # across an epoch boundary
  expected = [ref.batches(t) for t in steps]
  ref.close()
  workers, _ = provider(streamed, config, workers=2, threads=2, prefetch=2)
  resumed, _ = provider(streamed, config)
  for t, want in zip(steps, expected):
    for got in (workers.batches(t), resumed.batches(t)):
      for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
  workers.close()
  resumed.close()


def test_eval_batches_pad_the_last_batch_and_use_the_eval_transform(folder, both):
  mem, streamed = both
  config = folder_config(folder, input_pipeline="stream")
  sb, _ = provider(streamed, config, meta=False)
  got = list(sb.eval_batches(streamed.x_train, 6))
  assert mem.num_train == 15
  assert [(s, n) for s, n, _ in got] == [(0, 6), (6, 6), (12, 3)]
  x = np.concatenate([x[:n] for _, n, x in got])
  np.testing.assert_array_equal(x, mem.x_train)
  last = got[-1][2]
  assert last.shape[0] == 6
  np.testing.assert_array_equal(last[3:], np.repeat(last[2:3], 3, axis=0))


def test_each_host_decodes_only_its_rows(folder, both):
  """A process decodes the positions its devices hold (here: rows 2..3 of 4, as the second of
  two hosts), and the global array it builds has those rows."""
  import jax

  _, streamed = both

  class SecondHalf:  # the index map a 2-host 'data' sharding gives the second host
    def addressable_devices_indices_map(self, shape):
      n = shape[0]
      return {"dev2": (slice(n // 2, 3 * n // 4),), "dev3": (slice(3 * n // 4, n),)}

  np.testing.assert_array_equal(stream.local_rows_of(SecondHalf(), 4), [2, 3])
  config = folder_config(folder, input_pipeline="stream")
  full, _ = provider(streamed, config, meta=False)
  idx, x_all, _, _ = full.batches(0)
  local, _ = provider(streamed, config, meta=False)
  local.plan.local = {4: np.array([2, 3])}
  idx2, x_mine, _, _ = local.batches(0)
  np.testing.assert_array_equal(idx, idx2)
  np.testing.assert_array_equal(x_mine[0], x_all[0][2:])
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shard = stream.stack_local(x_all[0], np.arange(4), 4)
  arr = jax.make_array_from_callback(x_all[0].shape, sharding, shard)
  np.testing.assert_array_equal(np.asarray(arr), x_all[0])
  full.close()
  local.close()


# ---- bad files ---------------------------------------------------------------------------------


def test_corrupt_jpeg_while_streaming_names_the_file_or_is_zeros_and_reported(tmp_path):
  root = write_jpegs(str(tmp_path / "imgs"), per_class=3)
  bad = os.path.join(root, "bee", "01.jpg")
  with open(bad, "rb") as f:
    head = f.read()[:200]
  with open(bad, "wb") as f:
    f.write(head)  # a truncated JPEG: the header reads, the pixels do not
  config = folder_config(root, input_pipeline="stream", batch_size=9, meta_from_train=False,
                         given_labels="noisy")
  ds = data.build(config)
  sb, _ = provider(ds, config, meta=False)
  with pytest.raises(images.ImageError, match=r"cannot read image .*bee/01\.jpg.*"
                                              r"skip_bad_images=true"):
    for t in range(2):
      sb.batches(t)
  sb.close()
  config.skip_bad_images = True
  sb, _ = provider(ds, config, meta=False)
  row = list(ds.x_train.reader.paths).index(bad)
  for t in range(2):
    idx, x, _, _ = sb.batches(t)
    hits = np.flatnonzero(idx[0] == row)
    for j in hits:
      assert not x[0, j].any()
  assert list(sb.bad_images) == [bad]
  sb.close()


def test_missing_listed_file_is_named_or_skipped_and_counted(tmp_path):
  root = write_jpegs(str(tmp_path / "imgs"), per_class=3)
  lst = tmp_path / "train.txt"
  lines = [f"{c}/{i:02d}.jpg {k}" for k, c in enumerate(CLASSES) for i in range(3)]
  lst.write_text("\n".join(lines + ["bee/99.jpg 1"]) + "\n")
  for pipe in ("memory", "stream"):
    c = folder_config(root, dataset="list", train_list=str(lst), input_pipeline=pipe)
    with pytest.raises(images.ImageError, match=r"bee/99\.jpg"):
      data.build(c)
    c.skip_bad_images = True
    ds = data.build(c)
    assert ds.num_train + ds.y_meta.shape[0] == 9
    assert ds.source_info["train_list_skipped_images"] == 1
    assert ds.source_info["train_list_skipped_examples"] == [os.path.join(root, "bee/99.jpg")]


# ---- tfds array_record -------------------------------------------------------------------------


def write_tfds(data_dir, name="fake_photos", n=12):
  """A tfds ``array_record`` dataset as ``tfds build`` lays it out (image feature stored as its
  JPEG bytes), written without TensorFlow."""
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module

  d = os.path.join(data_dir, name, "1.0.0")
  os.makedirs(d, exist_ok=True)
  labels = tfds.features.ClassLabel(names=list(CLASSES))
  write = tfds.features.FeaturesDict({"image": tfds.features.Tensor(shape=(), dtype=np.object_),
                                      "label": labels})
  read = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3)),
                                     "label": labels})
  rng = np.random.default_rng(0)
  template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
  writer = array_record_module.ArrayRecordWriter(
      os.path.join(d, f"{name}-train.array_record-00000-of-00001"), "group_size:1")
  for i in range(n):
    buf = io.BytesIO()
    base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    Image.fromarray(base).resize((30 + i, 20 + i)).save(buf, "JPEG")
    writer.write(write.serialize_example({"image": buf.getvalue(), "label": i % 3}))
  writer.close()
  split = tfds.core.SplitInfo(
      name="train", shard_lengths=[n], num_bytes=0,
      filename_template=tfds.core.ShardedFileTemplate(
          data_dir=d, template=template, dataset_name=name, split="train",
          filetype_suffix="array_record"))
  tfds.folder_dataset.write_metadata(data_dir=d, features=read, split_infos=[split],
                                     filename_template=template, check_data=False)
  return name


def test_tfds_records_stream_to_the_in_memory_pixels(tmp_path):
  name = write_tfds(str(tmp_path / "tfds"))
  c = folder_config("", dataset="tfds", tfds_name=name, data_dir=str(tmp_path / "tfds"),
                    tfds_test_split="", given_labels="noisy")
  mem = data.build(c)
  c.input_pipeline = "stream"
  streamed = data.build(c)
  table = streamed.x_train
  assert isinstance(table.reader, image_table.TfdsReader) and table.shape == mem.x_train.shape
  np.testing.assert_array_equal(streamed.y_train, mem.y_train)
  sb, spe = provider(streamed, c, meta=False, workers=1)  # the reader reopens in the worker
  for t in range(spe):
    idx, x, _, _ = sb.batches(t)
    np.testing.assert_array_equal(x[0], mem.x_train[idx[0]])
  sb.close()


def test_concatenated_tables_read_each_part_in_order(folder, both):
  _, streamed = both
  joined = image_table.concat([streamed.x_train, streamed.x_meta])
  assert joined.shape == (len(streamed.x_train) + len(streamed.x_meta),) + \
      streamed.x_train.shape[1:]
  n = len(streamed.x_train)
  assert joined.name(n) == streamed.x_meta.name(0)
  assert joined.name(n - 1) == streamed.x_train.name(n - 1)
  with joined.image(n + 1) as a, streamed.x_meta.image(1) as b:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(TypeError, match="decoded batch by batch"):
    np.asarray(joined)
