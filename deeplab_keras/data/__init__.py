"""PASCAL VOC 2012 / SBD readers, the tf.data pipeline and the built-in dataset.

  builtin        the synthetic built-in dataset in VOCdevkit layout (`ensure_builtin`).
  voc            VOCdevkit / SBD readers, split lists, train_aug arithmetic.
  decode         image / label decoding and validation.
  prescan        the file checks before a pipeline is built (`scan_examples`).
  pipeline       `make_dataset` / `make_tfds_dataset`: augmentation, batching.
  tfds_builder   the TFDS builder `voc2012_segmentation`.
  custom         your own data (a package): one module per layout, class tables,
                 mask decoding, splits, class frequencies and weights.

TensorFlow is imported only when the pipeline is used, so `builtin` and `voc`
stay cheap to import. This layer imports only the ground layer below it
(`palette`, `preprocessing`, `utils`), never training, evaluation or export.
"""

from deeplab_keras._lazy import lazy_getattr

_LAZY = {
    "make_dataset": "deeplab_keras.data.pipeline",
    "make_tfds_dataset": "deeplab_keras.data.pipeline",
    "make_custom_dataset": "deeplab_keras.data.pipeline",
    "open_dataset": "deeplab_keras.data.custom",
    "augment": "deeplab_keras.data.pipeline",
    "list_examples": "deeplab_keras.data.voc",
    "read_split": "deeplab_keras.data.voc",
    "scan_examples": "deeplab_keras.data.prescan",
    "ensure_builtin": "deeplab_keras.data.builtin",
    "DataError": "deeplab_keras.data.decode",
    "SPLITS": "deeplab_keras.data.voc",
}


__getattr__ = lazy_getattr(__name__, _LAZY, (
    "builtin", "voc", "decode", "prescan", "pipeline", "tfds_builder", "synthetic", "custom"))
