"""PASCAL VOC 2012 / SBD readers, the tf.data pipeline and the built-in dataset.

  builtin        the synthetic built-in dataset in VOCdevkit layout (`ensure_builtin`).
  voc            VOCdevkit / SBD readers, split lists, train_aug arithmetic.
  decode         image / label decoding and validation.
  pipeline       `make_dataset` / `make_tfds_dataset`: augmentation, batching.
  tfds_builder   the TFDS builder `voc2012_segmentation`.

TensorFlow is imported only when the pipeline is used, so `builtin` and `voc`
stay cheap to import.
"""

_LAZY = {
    "make_dataset": "deeplab_keras.data.pipeline",
    "make_tfds_dataset": "deeplab_keras.data.pipeline",
    "augment": "deeplab_keras.data.pipeline",
    "list_examples": "deeplab_keras.data.voc",
    "read_split": "deeplab_keras.data.voc",
    "scan_examples": "deeplab_keras.data.pipeline",
    "ensure_builtin": "deeplab_keras.data.builtin",
    "DataError": "deeplab_keras.data.decode",
    "SPLITS": "deeplab_keras.data.voc",
}


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("builtin", "voc", "decode", "pipeline", "tfds_builder", "synthetic"):
        return importlib.import_module(f"deeplab_keras.data.{name}")
    raise AttributeError(f"module 'deeplab_keras.data' has no attribute {name!r}")
