"""The built-in dataset: a small synthetic VOC-format dataset, generated on demand.

It lets `train.py`, the notebooks and the tests run without PASCAL VOC (which
cannot be downloaded automatically). It is written in the exact VOCdevkit
layout, so it goes through the same reader and pipeline as real VOC 2012:

    <root>/VOC2012/JPEGImages/builtin_000000.jpg          RGB JPEG, quality 90
    <root>/VOC2012/SegmentationClass/builtin_000000.png   palette PNG, VOC colours
    <root>/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    <root>/builtin_info.json                               version, seed, counts

Scenes are 160x120 to 240x180 pixels (width and height drawn independently),
a muted textured background with 1-3 objects of the classes in `CLASS_NAMES`
(red disc, striped green square, checkered blue triangle, yellow ring, dotted
magenta cross). Label values are the VOC palette indices 0..NUM_CLASSES-1 and
255 on a 2-pixel band around every object outline, as VOC marks its boundaries.

Example:
    >>> from deeplab_keras.data import builtin, make_dataset
    >>> voc_dir = builtin.ensure_builtin()        # generated once, a few seconds
    >>> ds = make_dataset(voc_dir, "train", training=True, batch_size=8,
    ...                   crop_size=161, num_classes=builtin.NUM_CLASSES)
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from deeplab_keras.data import synthetic

CLASS_NAMES = synthetic.CLASS_NAMES
NUM_CLASSES = synthetic.NUM_CLASSES

# Bump when the generator's output changes, so stale copies are regenerated.
VERSION = 1
NUM_TRAIN = 300
NUM_VAL = 100
ENV_VAR = "DEEPLAB_KERAS_DATA_DIR"
INFO_FILE = "builtin_info.json"


def default_root():
    """Where the built-in dataset lives: $DEEPLAB_KERAS_DATA_DIR, else
    `~/.keras/datasets/deeplab_keras_builtin`."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".keras" / "datasets" / "deeplab_keras_builtin"


def _names(prefix, start, count):
    return [f"{prefix}_{i:06d}" for i in range(start, start + count)]


def generate(root, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0):
    """Write the dataset into `root` (which must not exist yet), atomically.

    Files are written into a temporary sibling directory which is renamed to
    `root` at the end, so an interrupted run never leaves a half dataset.

    Args:
      root: target directory (the VOCdevkit dir; `VOC2012/` is created inside).
      num_train: training images (>= 1).
      num_val: validation images (>= 1).
      seed: integer seed; the same seed gives byte-identical files.

    Returns:
      Path of `root`.

    Raises:
      ValueError: bad counts or seed.
      FileExistsError: `root` already exists.
    """
    for key, value in (("num_train", num_train), ("num_val", num_val)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive int. Received: {key}={value!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int. Received: seed={seed!r}")
    root = Path(root).expanduser()
    if root.exists():
        raise FileExistsError(f"Refusing to overwrite an existing directory: {root}")
    root.parent.mkdir(parents=True, exist_ok=True)

    train = _names("builtin", 0, num_train)
    val = _names("builtin", num_train, num_val)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        synthetic.write_voc(
            tmp, synthetic.make_examples(train + val, seed),
            {"train": train, "val": val, "trainval": train + val})
        info = {"version": VERSION, "seed": seed, "num_train": num_train,
                "num_val": num_val, "num_classes": NUM_CLASSES,
                "class_names": list(CLASS_NAMES)}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, root)  # atomic on one filesystem; fails if root appeared
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _read_info(root):
    try:
        return json.loads((root / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def ensure_builtin(root=None):
    """Return the built-in dataset's VOCdevkit dir, generating it if absent.

    Args:
      root: directory to use; default `default_root()`.

    Returns:
      Path of the directory that contains `VOC2012/` (pass it to `make_dataset`).

    Raises:
      FileExistsError: `root` exists but is not a built-in dataset (it is never
        overwritten).
    """
    root = default_root() if root is None else Path(root).expanduser()
    info = _read_info(root)
    if info is not None and info.get("version") == VERSION:
        return root
    if root.exists() and info is None:
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # an empty directory is safe to replace
        else:
            raise FileExistsError(
                f"{root} exists but is not a deeplab_keras built-in dataset "
                f"(no {INFO_FILE}); pass another root or set ${ENV_VAR}.")
    if info is not None:
        # An older generator version: build the new one beside it, then swap.
        fresh = root.with_name(f".{root.name}.v{VERSION}-{os.getpid()}")
        shutil.rmtree(fresh, ignore_errors=True)
        generate(fresh, num_train=NUM_TRAIN, num_val=NUM_VAL)
        stale = root.with_name(f".{root.name}.stale-{os.getpid()}")
        os.replace(root, stale)
        os.replace(fresh, root)
        shutil.rmtree(stale, ignore_errors=True)
        return root
    try:
        generate(root, num_train=NUM_TRAIN, num_val=NUM_VAL)
    except OSError:
        # Another process may have finished first; its copy is as good as ours.
        if _read_info(root) is None:
            raise
    return root
