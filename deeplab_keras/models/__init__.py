"""DeepLab v1/v2 networks for Keras 3: VGG16-LargeFOV, VGG16-ASPP-S/L, ResNet-101-ASPP.

Public API:
  build_model(name, num_classes=21, backbone_weights=None, ...) -> keras.Model
  available_models() -> list of names
  OUTPUT_STRIDE (8): logits are [B, ceil(H/8), ceil(W/8), C]
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
from deeplab_keras.models.strides import OUTPUT_STRIDE
from deeplab_keras.models.weights import decimate_vgg_fc, load_backbone_weights

__all__ = [
    "OUTPUT_STRIDE",
    "ModelSpec",
    "ResizeLogits",
    "ScaleImage",
    "available_models",
    "build_model",
    "classifier_layers",
    "decimate_vgg_fc",
    "load_backbone_weights",
    "resize_logits",
    "wrap_msc",
]
