"""DeepLab v1/v2 networks for Keras 3: VGG16-LargeFOV, VGG16-ASPP-S/L, ResNet-101-ASPP.

Public API:
  build_model(name, num_classes=21, backbone_weights=None, ...) -> keras.Model
  available_models() -> list of names
  OUTPUT_STRIDE (8): logits are about H/8 x W/8; exactly `logits_size(backbone, (H, W))`
    (Caffe's ceil-mode pools: 321 -> 41, 513 -> 65, 375x500 -> 48x64 for VGG16)
  load_pretrained(name_or_path) / available_pretrained() / get_release / Release: the
    released DeepLab models; defined one layer up in `deeplab_keras.pretrained` (it uses
    the converter, which uses these networks) and re-exported here lazily, on first
    access, so that the names the README shows keep working: the one upward import of
    this package (allow-listed in tests/test_architecture.py)
  resize_logits(logits, size_hw) / ResizeLogits: bilinear logits at input resolution
  wrap_msc(model, scales=(1.0, 0.75, 0.5), training_outputs=False): multi-scale inputs
  classifier_layers(model): the 10x learning-rate layers (fc8 / ASPP convs)

Example:
  >>> from deeplab_keras.models import build_model, resize_logits
  >>> model = build_model("vgg16_largefov", width_multiplier=0.125)
  >>> logits = model(np.zeros((1, 321, 321, 3), "float32"))   # [1, 41, 41, 21]
  >>> full = resize_logits(logits, (321, 321))                # [1, 321, 321, 21]
"""

from deeplab_keras.models.build import build_model, classifier_layers
from deeplab_keras.models.layers import ResizeLogits, ScaleImage, resize_logits
from deeplab_keras.models.msc import wrap_msc
from deeplab_keras.models.registry import ModelSpec, available_models
from deeplab_keras.models.strides import OUTPUT_STRIDE, logits_size
from deeplab_keras.models.weights import decimate_vgg_fc, load_backbone_weights, register_backbone_reader

__all__ = [
    "OUTPUT_STRIDE",
    "ModelSpec",
    "Release",
    "ResizeLogits",
    "ScaleImage",
    "available_models",
    "available_pretrained",
    "build_model",
    "classifier_layers",
    "decimate_vgg_fc",
    "get_release",
    "load_backbone_weights",
    "load_pretrained",
    "logits_size",
    "register_backbone_reader",
    "resize_logits",
    "wrap_msc",
]

_PRETRAINED = ("Release", "available_pretrained", "get_release", "load_pretrained")


def __getattr__(name):
    if name in _PRETRAINED:
        # Backwards-compatible re-export from the layer above (see the docstring).
        from deeplab_keras import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'deeplab_keras.models' has no attribute {name!r}")
