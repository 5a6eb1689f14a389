"""The tf.data input pipeline for DeepLab training and evaluation.

Training (DESIGN.md §3, as in the DeepLab Caffe data layer): decode, random
scale in [0.5, 1.5] (image bilinear, label nearest neighbour: labels are never
interpolated), pad bottom/right up to the crop (image with the ImageNet mean,
i.e. 0 after preprocessing; label with 255), random crop, random horizontal
flip, then `deeplab_keras.preprocessing.preprocess_images` (Caffe BGR minus
mean). Evaluation: the whole image, never cropped, batch 1, or padded
bottom/right to `eval_pad_to` (label 255) so that images batch together.

Every source goes through the same code: the raw VOCdevkit/SBD reader
(`make_dataset`), the TFDS builder (`make_tfds_dataset`), the built-in
dataset (a VOCdevkit on disk) and your own folders (`make_dataset` on a layout
of `deeplab_keras.data.custom`, via `make_custom_dataset`: only the mask
decoding differs, through the dataset's class table).

Determinism: with `seed` set, the shuffle order and every augmentation draw
come from that seed (stateless random ops fed by `tf.data.Dataset.random`),
and parallel maps keep their order, so two iterations over two datasets built
with the same arguments give identical batches. Each new epoch (repeat or a new
iterator) reshuffles and redraws, still deterministically.
"""

import functools

import numpy as np
import tensorflow as tf

from deeplab_keras.data import decode as dec
from deeplab_keras.data import voc
from deeplab_keras.data.prescan import decode_both, scan, scan_examples  # noqa: F401
from deeplab_keras.palette import IGNORE_LABEL, VOC_CLASSES
from deeplab_keras.preprocessing import MEAN_RGB, preprocess_images

AUTOTUNE = tf.data.AUTOTUNE


# ----------------------------------------------------------------------------
# Augmentation (pure TF, stateless)
# ----------------------------------------------------------------------------

def _pad_bottom_right(image, label, target_h, target_w):
    """Pad float RGB image with the mean (per channel) and label with 255."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    pads = [[0, tf.maximum(target_h - h, 0)], [0, tf.maximum(target_w - w, 0)]]
    image = tf.stack([tf.pad(image[..., c], pads, constant_values=MEAN_RGB[c])
                      for c in range(3)], axis=-1)
    label = tf.pad(label, pads, constant_values=IGNORE_LABEL)
    return image, label


def augment(image, label, seed, crop_size=321, scale_range=(0.5, 1.5), flip=True):
    """DeepLab training augmentation of one example.

    Args:
      image: uint8 or float32 [H, W, 3] RGB in 0-255.
      label: uint8 / int32 [H, W] class ids, 255 = ignore.
      seed: int32/int64 [2], a stateless random seed.
      crop_size: int or (height, width) of the output.
      scale_range: (low, high) of the uniform random scale; (1, 1) disables it.
      flip: random horizontal flip with probability 0.5.

    Returns:
      (image float32 [h, w, 3] RGB 0-255 (not yet preprocessed),
       label int32 [h, w]), (h, w) = crop size.

    Example:
      >>> img, lab = augment(tf.zeros([10, 12, 3], tf.uint8),
      ...                    tf.zeros([10, 12], tf.uint8), [1, 2], crop_size=8)
    """
    crop_h, crop_w = _pair(crop_size, "crop_size")
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    image = tf.cast(image, tf.float32)
    label = tf.cast(label, tf.int32)
    h = tf.shape(image)[0]
    w = tf.shape(image)[1]
    lo, hi = scale_range
    if (lo, hi) != (1, 1):
        scale = tf.random.stateless_uniform([], seeds[0], lo, hi)
        nh = tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
        nw = tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
        image = tf.image.resize(image, [nh, nw], method="bilinear")
        label = tf.image.resize(label[..., None], [nh, nw], method="nearest")[..., 0]
        h, w = nh, nw
    image, label = _pad_bottom_right(image, label, crop_h, crop_w)
    h = tf.maximum(h, crop_h)
    w = tf.maximum(w, crop_w)
    oy = tf.random.stateless_uniform([], seeds[1], 0, h - crop_h + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([], seeds[2], 0, w - crop_w + 1, dtype=tf.int32)
    image = image[oy:oy + crop_h, ox:ox + crop_w]
    label = label[oy:oy + crop_h, ox:ox + crop_w]
    if flip:
        do_flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        image = tf.cond(do_flip, lambda: tf.reverse(image, [1]), lambda: image)
        label = tf.cond(do_flip, lambda: tf.reverse(label, [1]), lambda: label)
    image = tf.ensure_shape(image, [crop_h, crop_w, 3])
    label = tf.ensure_shape(label, [crop_h, crop_w])
    return image, label


def _pair(value, what):
    pair = value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                       and v > 0 for v in pair)):
        raise ValueError(f"{what} must be a positive int or a pair of them. "
                         f"Received: {what}={value!r}")
    return int(pair[0]), int(pair[1])


# ----------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------

def _check_args(training, batch_size, crop_size, num_classes, seed, eval_pad_to,
                scale_range, on_error, validate):
    if not isinstance(training, bool):
        raise ValueError(f"training must be True or False. Received: training={training!r}")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    _pair(crop_size, "crop_size")
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) \
            or not 1 <= num_classes <= IGNORE_LABEL:
        raise ValueError(f"num_classes must be an int in [1, {IGNORE_LABEL}]. "
                         f"Received: num_classes={num_classes!r}")
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
        raise ValueError(f"seed must be an int or None. Received: seed={seed!r}")
    if eval_pad_to is not None:
        _pair(eval_pad_to, "eval_pad_to")
    if (not isinstance(scale_range, (tuple, list)) or len(scale_range) != 2
            or not 0 < scale_range[0] <= scale_range[1]):
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high. "
                         f"Received: scale_range={scale_range!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'. Received: on_error={on_error!r}")
    if validate not in ("header", "full"):
        raise ValueError(f"validate must be 'header' or 'full'. Received: validate={validate!r}")
    if not training and batch_size > 1 and eval_pad_to is None:
        raise ValueError(
            "Evaluation keeps whole images of different sizes, so batch_size must be 1 "
            "unless eval_pad_to is set (e.g. eval_pad_to=513). "
            f"Received: batch_size={batch_size}, eval_pad_to=None")


# ----------------------------------------------------------------------------
# Dataset assembly (shared by every source)
# ----------------------------------------------------------------------------

def _finish(ds, num_examples, *, training, batch_size, crop_size, seed, cache,
            shuffle, shuffle_buffer, repeat, drop_remainder, eval_pad_to,
            scale_range, flip, on_error, return_names):
    """Decoded {"image" uint8 [H,W,3], "label" uint8 [H,W], "name"} -> batches."""
    if on_error == "skip":
        # Failures inside the map (label values, sizes, undecodable pixels) drop
        # the example; TF logs each one with the message naming the file.
        ds = ds.ignore_errors(log_warning=True)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
        if shuffle:
            ds = ds.shuffle(min(num_examples, shuffle_buffer), seed=seed,
                            reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    if training:
        ds = tf.data.Dataset.zip(
            ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            .batch(2, drop_remainder=True))

        def train_map(ex, rand):
            image, label = augment(ex["image"], ex["label"], rand, crop_size=crop_size,
                                   scale_range=scale_range, flip=flip)
            return preprocess_images(image), label, ex["name"]

        ds = ds.map(train_map, num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        pad = None if eval_pad_to is None else _pair(eval_pad_to, "eval_pad_to")

        def eval_map(ex):
            image = tf.cast(ex["image"], tf.float32)
            label = tf.cast(ex["label"], tf.int32)
            if pad is not None:
                shape = tf.shape(image)
                fits = tf.debugging.Assert(
                    tf.logical_and(shape[0] <= pad[0], shape[1] <= pad[1]),
                    ["Image larger than eval_pad_to", pad, ":", ex["name"], "HxW",
                     shape[:2]])
                with tf.control_dependencies([fits]):
                    image, label = _pad_bottom_right(image, label, pad[0], pad[1])
                image = tf.ensure_shape(image, [pad[0], pad[1], 3])
                label = tf.ensure_shape(label, [pad[0], pad[1]])
            return preprocess_images(image), label, ex["name"]

        ds = ds.map(eval_map, num_parallel_calls=AUTOTUNE, deterministic=True)
    if drop_remainder is None:
        drop_remainder = training
    ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                  num_parallel_calls=AUTOTUNE, deterministic=True)
    if not return_names:
        ds = ds.map(lambda x, y, n: (x, y))
    ds = ds.prefetch(AUTOTUNE)
    opts = tf.data.Options()
    opts.deterministic = seed is not None or not training
    return ds.with_options(opts)


def make_dataset(data_dir, split, *, training, batch_size, crop_size=321, num_classes=None,
                 seed=None, cache=False, sbd_dir=None, eval_pad_to=None,
                 scale_range=(0.5, 1.5), flip=True, shuffle=None, shuffle_buffer=20000,
                 repeat=False, drop_remainder=None, on_error="raise", validate="header",
                 max_image_pixels=dec.DEFAULT_MAX_IMAGE_PIXELS, return_names=False,
                 ignore_value=IGNORE_LABEL, unknown_color="error",
                 ignore_classes=None):
    """A tf.data pipeline over PASCAL VOC 2012 (+ SBD), the built-in dataset, or
    your own data in one of the layouts of `deeplab_keras.data.custom`.

    Args:
      data_dir: the VOCdevkit directory (or its VOC2012/, or the dir holding
        VOCdevkit/), e.g. `builtin.ensure_builtin()`; or a folder in a layout
        of `deeplab_keras.data.custom` (images/ + masks/, a labelling tool's
        VOC-like or Roboflow export, CamVid), detected automatically; or such a
        folder already opened (`custom.open_dataset`).
      split: "train", "val", "trainval" or "train_aug" (needs `sbd_dir`); for
        your own data, the splits it has ("train", "val", "test").
      training: True: shuffle + augmentation + crops; False: whole images.
      batch_size: images per batch (evaluation: 1 unless `eval_pad_to`).
      crop_size: int or (h, w) training crop; 321 as in DeepLab.
      num_classes: labels must be in [0, num_classes) or 255. None: 21 for
        VOC; for your own data, the dataset's class count (a different number
        is an error).
      seed: int for a reproducible order and augmentation, None for random.
      cache: True caches decoded examples in memory, a str caches to that file
        prefix, False does not cache.
      sbd_dir: SBD `benchmark_RELEASE` (or its `dataset/`) or a
        `SegmentationClassAug` directory.
      eval_pad_to: int or (h, w): pad evaluation images bottom/right to it
        (label 255); an image larger than it is an error (never cropped).
      scale_range: random scale range for training.
      flip: random horizontal flips for training.
      shuffle: default `training`. Shuffles file names (all of them) before
        decoding, or decoded examples after `cache` (buffer `shuffle_buffer`).
      shuffle_buffer: shuffle buffer when caching.
      repeat: repeat forever (use with `steps_per_epoch`).
      drop_remainder: default `training` (static batch shape for
        tf.distribute).
      on_error: "raise" (default) stops on the first bad file with its name;
        "skip" drops bad examples: those found by the pre-scan are counted in
        a warning at build time, those found while decoding are logged one by
        one.
      validate: "header" (fast, default) or "full" (decode everything up front
        with PIL/SciPy; catches corrupt pixel data and bad label values before
        training, with exact skip counts).
      max_image_pixels: refuse images with more pixels (read from the header,
        nothing is decoded); None for no limit.
      return_names: also yield the example names (tf.string [B]) as a third
        element (for evaluation; do not pass such a dataset to `fit`).
      ignore_value, unknown_color, ignore_classes: mask options of your own
        data (`deeplab_keras.data.custom.open_dataset`); None ignore_classes
        means `custom.DEFAULT_IGNORE_CLASSES`. VOCdevkit labels use 255.

    Returns:
      tf.data.Dataset of (images float32 [B, H, W, 3] preprocessed (Caffe BGR
      minus mean), labels int32 [B, H, W], 255 = ignore). Training: H = W =
      crop; evaluation: the image size, or `eval_pad_to`.

    Raises:
      ValueError: bad arguments. FileNotFoundError: missing directories or
      lists. decode.DataError (a ValueError): a bad file, named.

    Example:
      >>> from deeplab_keras.data import builtin, make_dataset
      >>> ds = make_dataset(builtin.ensure_builtin(), "train", training=True,
      ...                   batch_size=8, crop_size=161,
      ...                   num_classes=builtin.NUM_CLASSES, seed=0)
      >>> images, labels = next(iter(ds))   # [8, 161, 161, 3], [8, 161, 161]
    """
    from deeplab_keras.data import custom

    if isinstance(data_dir, custom.Dataset) or (
            data_dir is not None and custom.source_kind(data_dir) != "voc"):
        if not isinstance(data_dir, custom.Dataset):
            data_dir = custom.open_dataset(
                data_dir, ignore_value=ignore_value, unknown_color=unknown_color,
                ignore_classes=custom.DEFAULT_IGNORE_CLASSES if ignore_classes is None
                else ignore_classes)
        source = _custom_source
        num_classes = data_dir.num_classes if num_classes is None else num_classes
    else:
        if ignore_value != IGNORE_LABEL:
            raise ValueError(f"VOCdevkit labels use {IGNORE_LABEL} as the ignore label; "
                             f"ignore_value is for your own data's masks. Received: "
                             f"ignore_value={ignore_value!r}")
        source = functools.partial(_voc_source, sbd_dir=sbd_dir)
        num_classes = len(VOC_CLASSES) if num_classes is None else num_classes
    _check_args(training, batch_size, crop_size, num_classes, seed, eval_pad_to,
                scale_range, on_error, validate)
    examples, kinds, decode_label = source(data_dir, split, num_classes, validate=validate,
                                           on_error=on_error, max_image_pixels=max_image_pixels)
    return _file_dataset(examples, kinds, decode_label, num_classes, training=training,
                         batch_size=batch_size, crop_size=crop_size, seed=seed, cache=cache,
                         shuffle=shuffle, shuffle_buffer=shuffle_buffer, repeat=repeat,
                         drop_remainder=drop_remainder, eval_pad_to=eval_pad_to,
                         scale_range=scale_range, flip=flip, on_error=on_error,
                         return_names=return_names)


def _voc_source(data_dir, split, num_classes, *, sbd_dir, validate, on_error,
                max_image_pixels):
    """(checked examples, their LabelKinds, label decoder) of a VOCdevkit split."""
    examples = voc.list_examples(data_dir, split, sbd_dir=sbd_dir)
    if not examples:
        raise ValueError(f"Split {split!r} of {data_dir} lists no images.")
    examples, kinds, _ = scan_examples(examples, num_classes, validate=validate,
                                       on_error=on_error, max_image_pixels=max_image_pixels)
    if not examples:
        raise ValueError(f"Every example of split {split!r} in {data_dir} was skipped "
                         f"as bad (on_error='skip').")

    def decode_label(ex, kinds_present):
        return dec.decode_label_tf(ex["label_path"], ex["kind"], kinds_present)

    return examples, kinds, decode_label


def _custom_source(dataset, split, num_classes, *, validate, on_error, max_image_pixels):
    """(checked examples, their MaskKinds, label decoder) of your own data.

    The masks are mapped to class ids through the dataset's `ClassTable` inside
    the tf.data map (`custom.decode_label_tf`).
    """
    from deeplab_keras.data import custom

    if num_classes != dataset.num_classes:
        raise ValueError(
            f"num_classes={num_classes} does not match the dataset at {dataset.root}: its "
            f"class table ({dataset.table.source or 'the mask values'}) has "
            f"{dataset.num_classes} classes ({', '.join(dataset.class_names)}). "
            f"Received: num_classes={num_classes}")
    examples = dataset.examples(split)
    if not examples:
        raise ValueError(f"Split {split!r} of {dataset.root} has no images.")

    def check(ex):
        kind = dataset.inspect(ex, max_image_pixels)
        if validate == "full":
            decode_both(ex, dataset.read_label, "mask")
        return kind

    kept, kinds, _ = scan(examples, check, on_error)
    if not kept:
        raise ValueError(f"Every example of split {split!r} in {dataset.root} was skipped "
                         f"as bad (on_error='skip').")

    def decode_label(ex, kinds_present):
        return custom.decode_label_tf(dataset, ex["label_path"], ex["kind"], kinds_present), None

    return kept, kinds, decode_label


def _file_dataset(examples, kinds, decode_label, num_classes, *, training, shuffle, seed, cache,
                  **finish):
    """The tf.data pipeline over checked (image path, label path) examples.

    `decode_label(ex, kinds_present)` returns (label, colour_ok or None); VOC
    and your own data differ only there. `finish`: the arguments of `_finish`.
    """
    shuffle = training if shuffle is None else shuffle
    kinds_present = sorted(set(kinds))
    ds = tf.data.Dataset.from_tensor_slices({
        "image_path": [e.image_path for e in examples],
        "label_path": [e.label_path for e in examples],
        "kind": np.asarray(kinds, np.int32),
        "name": [e.name for e in examples],
    })
    if shuffle and not cache:
        ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)

    def load(ex):
        image = dec.decode_image_tf(tf.io.read_file(ex["image_path"]))
        label, colour_ok = decode_label(ex, kinds_present)
        image, label = dec.check_example_tf(image, label, ex["label_path"], num_classes, colour_ok)
        return {"image": image, "label": label, "name": ex["name"]}

    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _finish(ds, len(examples), training=training, seed=seed, cache=cache, shuffle=shuffle,
                   **finish)


def make_custom_dataset(dataset, split, **options):
    """`make_dataset` over an opened `deeplab_keras.data.custom.Dataset` (same pipeline).

    Only the mask decoding differs from VOC's: through the dataset's
    `ClassTable`, inside the tf.data map. Everything after decoding
    (augmentation with nearest-neighbour label scaling, padding with 255,
    batching) is the code VOC goes through. `options`: those of `make_dataset`
    (`num_classes` None means the dataset's own; the mask options are the
    dataset's).
    """
    for name in ("sbd_dir", "ignore_value", "unknown_color", "ignore_classes"):
        if name in options:
            raise ValueError(f"{name} is not an option of an opened dataset (its mask options "
                             f"are set by custom.open_dataset). Received: {name}="
                             f"{options[name]!r}")
    return make_dataset(dataset, split, **options)


def make_tfds_dataset(split, *, training, batch_size, config="segmentation", data_dir=None,
                      manual_dir=None, crop_size=321, num_classes=21, seed=None,
                      cache=False, eval_pad_to=None, scale_range=(0.5, 1.5), flip=True,
                      shuffle=None, shuffle_buffer=2048, repeat=False,
                      drop_remainder=None, on_error="raise", download_and_prepare=True,
                      return_names=False):
    """The same pipeline over the TFDS builder `voc2012_segmentation`.

    Args:
      split: a TFDS split of the config: "train", "val" (config
        "segmentation") or "train_aug", "val" (config "train_aug"); TFDS split
        arithmetic such as "train+val" works too.
      config: "segmentation" (VOC only) or "train_aug" (VOC + SBD).
      data_dir: TFDS data dir (default: TFDS's, ~/tensorflow_datasets).
      manual_dir: where VOCtrainval_11-May-2012.tar and benchmark.tgz are.
      download_and_prepare: prepare the dataset first if it is not there.
      Other arguments: as `make_dataset`.

    Returns:
      Same as `make_dataset`.

    Example:
      >>> ds = make_tfds_dataset("train", training=True, batch_size=10,
      ...                        manual_dir="~/Downloads", seed=0)
    """
    import tensorflow_datasets as tfds

    from deeplab_keras.data import tfds_builder

    _check_args(training, batch_size, crop_size, num_classes, seed, eval_pad_to,
                scale_range, on_error, "header")
    builder = tfds_builder.Voc2012Segmentation(config=config, data_dir=data_dir)
    if download_and_prepare:
        dl_config = None
        if manual_dir is not None:
            dl_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        builder.download_and_prepare(download_config=dl_config)
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding(),
                                      "segmentation_mask": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(shuffle_seed=seed))
    num_examples = builder.info.splits[split].num_examples
    shuffle = training if shuffle is None else shuffle
    if shuffle and not cache:
        ds = ds.shuffle(min(num_examples, shuffle_buffer), seed=seed,
                        reshuffle_each_iteration=True)

    def load(ex):
        image = dec.decode_image_tf(ex["image"])
        label = tf.io.decode_png(ex["segmentation_mask"], channels=1)[..., 0]
        image, label = dec.check_example_tf(image, label, ex["file_name"], num_classes)
        return {"image": image, "label": label, "name": ex["file_name"]}

    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _finish(ds, num_examples, training=training, batch_size=batch_size,
                   crop_size=crop_size, seed=seed, cache=cache, shuffle=shuffle,
                   shuffle_buffer=shuffle_buffer, repeat=repeat,
                   drop_remainder=drop_remainder, eval_pad_to=eval_pad_to,
                   scale_range=scale_range, flip=flip, on_error=on_error,
                   return_names=return_names)
