"""Converters for the released DeepLab weights (no Caffe, torch optional).

- `read_caffemodel(path)`: layers and blobs of a .caffemodel (new `layer` and
  V1 `layers` formats), by a protobuf wire decoder.
- `read_pth(path)`: a deeplab-pytorch state dict, with torch or a restricted
  zip / legacy pickle reader that only rebuilds tensors.
- `convert(source, model=None, num_classes=None)`: the single-scale Keras
  DeepLab model with every weight matched by name and shape.
- `load_released_backbone(model, source)`: the backbone of such a file into a
  model; registered with `models.weights` on import, so that
  `build_model(..., backbone_weights="init.caffemodel")` reads these files
  (the models sit below the converter and never import it).
- CLI: `python -m deeplab_keras.convert SOURCE --output FILE.keras` (console
  script `deeplab-convert`).

Example:
  >>> from deeplab_keras.convert.convert import convert, save_atomic
  >>> conv = convert("train_iter_20000.caffemodel")
  >>> print(conv.summary())
  >>> save_atomic(conv.model, "deeplabv2_resnet101_voc.keras")
"""

from deeplab_keras._lazy import lazy_getattr
from deeplab_keras.convert.backbone import SUFFIXES as _SUFFIXES
from deeplab_keras.convert.backbone import load_released_backbone
from deeplab_keras.models.weights import register_backbone_reader

register_backbone_reader(_SUFFIXES, load_released_backbone)

_LAZY = {
    "read_caffemodel": "deeplab_keras.convert.caffemodel",
    "write_caffemodel": "deeplab_keras.convert.caffemodel",
    "CaffeModelError": "deeplab_keras.convert.caffemodel",
    "read_pth": "deeplab_keras.convert.pth",
    "PthError": "deeplab_keras.convert.pth",
    "convert": "deeplab_keras.convert.convert",
    "save_atomic": "deeplab_keras.convert.convert",
    "read_source": "deeplab_keras.convert.convert",
    "Conversion": "deeplab_keras.convert.convert",
}

__getattr__ = lazy_getattr(__name__, _LAZY, ("caffemodel", "pth", "mapping", "convert", "cli", "backbone"))
