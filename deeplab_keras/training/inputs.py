"""The data of a training run: which source, how many classes, the checks before training.

  resolve_data       the built-in set when no source is given; num_classes from your data.
  open_custom        the `data.custom.Dataset` of `config.data_dir` (None for VOC / TFDS / built-in).
  check_data         the class-frequency report and the loss's class weights.
  make_train_dataset the augmented, repeated, batched training stream.
  class_names        the names of the classes of the config's data.
"""

import dataclasses
import json
from pathlib import Path

from deeplab_keras.training.config import TrainConfig
from deeplab_keras.training.strategy import distribute_options


def resolve_data(config):
    """(config, data dir or None): the built-in dataset when no data source is given.

    With the built-in data, num_classes is set to the built-in class count. With
    your own data (`data_dir` in a layout of `deeplab_keras.data.custom`),
    num_classes comes from the dataset's class table: a value left at the
    preset's default is replaced (and the change printed), any other value that
    differs is an error naming both; the "train_aug" split (VOC + SBD) becomes
    "train". The resolved config is the one written to the run directory.

    Raises:
      ValueError: num_classes differs from your dataset's class count.
      decode.DataError: a bad dataset (names the file).
    """
    if config.tfds:
        return config, None
    if config.data_dir:
        dataset = open_custom(config)
        if dataset is not None:
            config = _custom_num_classes(config, dataset)
            if config.train_split == "train_aug":
                config = dataclasses.replace(config, train_split="train")
            dataset.examples(config.train_split)  # a missing split fails before training
            if config.evaluate or config.val_miou_images or config.image_summary_every:
                dataset.examples(config.val_split)
        return config, Path(config.data_dir)
    from deeplab_keras.data import builtin

    data_dir = builtin.ensure_builtin()
    if config.num_classes != builtin.NUM_CLASSES:
        print(f"[train] no --data-dir/--tfds: using the built-in dataset ({data_dir}), "
              f"num_classes {config.num_classes} -> {builtin.NUM_CLASSES}", flush=True)
        config = dataclasses.replace(config, num_classes=builtin.NUM_CLASSES)
    if config.train_split == "train_aug":
        config = dataclasses.replace(config, train_split="train")
    return config, data_dir


def open_custom(config):
    """The `custom.Dataset` of `config.data_dir`, or None for a VOCdevkit / TFDS / built-in."""
    if config.tfds or not config.data_dir:
        return None
    from deeplab_keras.data import custom

    if custom.source_kind(config.data_dir) == "voc":
        return None
    return custom.open_dataset(config.data_dir, ignore_value=config.ignore_value,
                               unknown_color=config.unknown_color,
                               ignore_classes=config.ignore_classes)


def _custom_num_classes(config, dataset):
    if config.num_classes == dataset.num_classes:
        return config
    from deeplab_keras.training.config import PRESETS

    default = PRESETS[config.name].num_classes if config.name in PRESETS \
        else TrainConfig().num_classes
    if config.num_classes != default:
        raise ValueError(
            f"num_classes={config.num_classes} does not match the dataset at {dataset.root}: "
            f"its class table ({dataset.table.source or 'the mask values'}) has "
            f"{dataset.num_classes} classes ({', '.join(dataset.class_names)}). Leave "
            f"--num-classes out to use the dataset's. Received: num_classes={config.num_classes}")
    print(f"[train] num_classes {config.num_classes} -> {dataset.num_classes} from the "
          f"dataset at {dataset.root}", flush=True)
    return dataclasses.replace(config, num_classes=dataset.num_classes)


DATA_REPORT_JSON = "data_report.json"
DATA_REPORT_TXT = "class_frequencies.txt"


def check_data(config, run_dir=None):
    """The checks before training; returns the loss's class weights (None: unweighted).

    For your own data: prints the layout, the class names, the ignore rules, the
    splits and the class-frequency table of the training split (decoding every
    training mask once, so unknown colours fail here with the file's name), warns
    when one class covers > 95 % of the labelled pixels, and writes the table to
    `run_dir/class_frequencies.txt` and `run_dir/data_report.json`; the class
    names and colours go to `run_dir/classes.json` (the sidecar that
    `deeplab-predict` colours its outputs with).

    Args:
      config: a resolved `TrainConfig` (`resolve_data`).
      run_dir: where to write the report (None: nowhere).

    Returns:
      None, or a tuple of num_classes floats.

    Raises:
      ValueError: class_weights is a method name but the data is not your own
        (VOC / TFDS / built-in have no frequency table here; give a list).
    """
    from deeplab_keras.data import custom
    from deeplab_keras.utils.atomic import atomic_write_text

    method = custom.parse_class_weights(config.class_weights)
    dataset = open_custom(config)
    if dataset is None:
        if isinstance(method, str) and method != "none":
            raise ValueError(
                f"class_weights={method!r} is computed from the class-frequency table of your "
                "own data (data_dir in an images/+masks/, VOC-like export or CamVid layout); "
                f"for this data source give {config.num_classes} numbers instead. Received: "
                f"class_weights={config.class_weights!r}")
        if isinstance(method, str):
            return None
        if len(method) != config.num_classes:
            raise ValueError(f"class_weights lists {len(method)} numbers but num_classes is "
                             f"{config.num_classes}. Received: "
                             f"class_weights={config.class_weights!r}")
        return tuple(method)
    print(dataset.describe(), flush=True)
    report = custom.frequency_report(dataset, config.train_split)
    weights = custom.class_weights(report, method)
    table = report.table(None if method == "none" else weights)
    print(f"[data] class frequencies of the {config.train_split} split "
          f"(labelled pixels at full resolution):\n{table}", flush=True)
    warning = custom.dominance_warning(report, config.train_split)
    if warning:
        print(f"[data] {warning}", flush=True)
    if run_dir is not None:
        atomic_write_text(Path(run_dir) / DATA_REPORT_TXT,
                          dataset.describe() + "\n" + table + "\n"
                          + (warning + "\n" if warning else ""))
        info = {"data_dir": str(dataset.root), "layout": dataset.layout,
                "num_classes": dataset.num_classes, "class_names": list(dataset.class_names),
                "class_colors": list(custom.hex_colors(dataset.class_colors)),
                "ignored_classes": list(dataset.table.ignored),
                "ignore_value": dataset.ignore_value, "unknown_color": dataset.unknown_color,
                "splits": {k: len(v) for k, v in dataset.splits.items()},
                "split_note": dataset.split_note, "class_weights": config.class_weights,
                "train_split": config.train_split, "warning": warning,
                "frequencies": report.to_dict(None if method == "none" else weights)}
        atomic_write_text(Path(run_dir) / DATA_REPORT_JSON, json.dumps(info, indent=2) + "\n")
        # Beside model.keras (and copied into exports): deeplab-predict colours with it.
        custom.write_classes_json(Path(run_dir) / custom.CLASSES_FILE, dataset.class_names,
                                  dataset.class_colors)
    return None if method == "none" else tuple(float(w) for w in weights)


def make_train_dataset(config, data_dir, seed, output_keys=None):
    """The augmented, repeated training stream, batched with the global batch.

    Args:
      config: the `TrainConfig`.
      data_dir: VOCdevkit dir, or None with `config.tfds`.
      seed: augmentation / order seed (the trainer offsets it by the resume step
        so a resumed run does not replay the first batches).
      output_keys: for MSC models, the output names: labels are repeated into a
        dict with one entry per output (each loss reduces them to its own size).

    Returns:
      tf.data.Dataset of (images float32 [B, c, c, 3] preprocessed, labels int32
      [B, c, c] or a dict of them), c = crop_size, B = batch_size.
    """
    common = dict(training=True, batch_size=config.batch_size, crop_size=config.crop_size,
                  num_classes=config.num_classes, seed=seed, repeat=True, drop_remainder=True,
                  scale_range=(config.min_scale, config.max_scale), cache=config.cache_data)
    if config.tfds:
        from deeplab_keras.data import make_tfds_dataset

        tfds_config = "train_aug" if config.train_split == "train_aug" else "segmentation"
        ds = make_tfds_dataset(config.train_split, config=tfds_config,
                               data_dir=config.tfds_data_dir, manual_dir=config.tfds_manual_dir,
                               **common)
    else:
        from deeplab_keras.data import make_dataset

        ds = make_dataset(str(data_dir), config.train_split, sbd_dir=config.sbd_dir,
                          ignore_value=config.ignore_value, unknown_color=config.unknown_color,
                          ignore_classes=config.ignore_classes, **common)
    if output_keys:
        keys = tuple(output_keys)
        ds = ds.map(lambda images, labels: (images, {k: labels for k in keys}))
    return distribute_options(ds)



def class_names(config):
    """The class names of `config`'s data: built-in, your own dataset's table, VOC, or class_i."""
    from deeplab_keras.data import builtin
    from deeplab_keras.palette import VOC_CLASSES

    if not config.tfds and not config.data_dir:
        return list(builtin.CLASS_NAMES)
    dataset = open_custom(config)
    if dataset is not None:
        return list(dataset.class_names)
    if config.num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(config.num_classes)]
