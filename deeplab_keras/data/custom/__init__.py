"""Your own data: folders of images and masks, detected by layout, with class tables.

`open_dataset(root)` recognises four layouts (`detect_layout`), one module each
with its `detect(root)` and `read(root)`:

  folders     `images/` + `masks/` with the same file stems; split by
              `train.txt` / `val.txt`, by `train/` `val/` subfolders, or a
              seeded 90/10 split; optional class table beside them.
  voc_export  a labelling tool's VOC-like export (CVAT, Label Studio,
              Roboflow as VOC): `JPEGImages/`, `SegmentationClass/`,
              `ImageSets/Segmentation/*.txt`, `labelmap.txt` or `_classes.csv`.
  roboflow    Roboflow's "Semantic Segmentation Masks": `train/`, `valid/`,
              `test/` with `<stem>_mask.png` and `_classes.csv`.
  camvid      `train/`, `train_labels/`, `val/`, `val_labels/` and
              `class_dict.csv`.

A VOCdevkit (`VOC2012/` with `ImageSets/Segmentation/train.txt` and no class
table) is not one of these: `deeplab_keras.data.voc` reads it.

The other modules, from the ground up:

  tables   class table files -> `ClassTable` (ids in row order, ignored rows ->
           255), and the model's `classes.json` sidecar.
  masks    mask decoding through a table: index, palette and colour masks, the
           NumPy reference and the tf.data decoder (`decode_label_tf`).
  files    listing a folder: images and masks paired by stem, the table file.
  splits   split lists and the seeded 90/10 split.
  dataset  `Dataset` and `open_dataset`.
  stats    the class-frequency table, class weights, the dominance warning.

Everything downstream (pipeline, loss, metrics) sees class ids in [0, C) and
255 (ignore).

Example:
    >>> from deeplab_keras.data import custom, make_dataset
    >>> ds = custom.open_dataset("~/data/camvid")
    >>> ds.layout, ds.num_classes, ds.class_names[:3]
    ('camvid', 31, ('Animal', 'Archway', 'Bicyclist'))
    >>> train = make_dataset("~/data/camvid", "train", training=True, batch_size=8)
"""

from deeplab_keras.data.custom.dataset import (LAYOUTS, UNKNOWN_COLOR_MODES, Dataset,
                                               detect_layout, is_vocdevkit, open_dataset,
                                               source_kind)
from deeplab_keras.data.custom.files import IMAGE_SUFFIXES
from deeplab_keras.data.custom.masks import MaskKind, decode_label_tf
from deeplab_keras.data.custom.splits import SPLIT_SEED, VAL_FRACTION, seeded_split
from deeplab_keras.data.custom.stats import (CLASS_WEIGHT_METHODS, DOMINANT_CLASS_FRACTION,
                                             FrequencyReport, class_weights, dominance_warning,
                                             frequency_report, parse_class_weights)
from deeplab_keras.data.custom.tables import (CLASSES_FILE, DEFAULT_IGNORE_CLASSES, TABLE_FILES,
                                              ClassRow, ClassTable, build_table, hex_colors,
                                              identity_table, parse_hex_colors, read_class_dict,
                                              read_classes_json, read_classes_txt, read_labelmap,
                                              read_roboflow_classes, read_table,
                                              write_classes_json)
from deeplab_keras.data.decode import DataError
from deeplab_keras.data.voc import Example

__all__ = [
    "CLASSES_FILE", "CLASS_WEIGHT_METHODS", "ClassRow", "ClassTable", "DEFAULT_IGNORE_CLASSES",
    "DOMINANT_CLASS_FRACTION", "DataError", "Dataset", "Example", "FrequencyReport",
    "IMAGE_SUFFIXES", "LAYOUTS", "MaskKind", "SPLIT_SEED", "TABLE_FILES", "UNKNOWN_COLOR_MODES",
    "VAL_FRACTION", "build_table", "class_weights", "decode_label_tf", "detect_layout",
    "dominance_warning", "frequency_report", "hex_colors", "identity_table", "is_vocdevkit",
    "open_dataset", "parse_class_weights", "parse_hex_colors", "read_class_dict",
    "read_classes_json", "read_classes_txt", "read_labelmap", "read_roboflow_classes",
    "read_table", "seeded_split", "source_kind", "write_classes_json",
]
