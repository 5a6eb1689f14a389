"""`build_model`: the four DeepLab networks as functional Keras 3 models."""

import math
import numbers
import os
import re

import keras

from deeplab_keras.models import heads
from deeplab_keras.models.msc import check_scales, wrap_msc
from deeplab_keras.models.registry import get_spec
from deeplab_keras.models.resnet import resnet101_backbone
from deeplab_keras.models.strides import OUTPUT_STRIDE
from deeplab_keras.models.vgg16 import vgg16_backbone
from deeplab_keras.models.weights import load_backbone_weights

_CLASSIFIER_NAME = re.compile(r"^(fc8(_\d+)?|aspp_\d+)$")


def _check_args(num_classes, backbone_weights, input_shape, width_multiplier, freeze_bn,
                dropout, msc_scales, msc_training_outputs, model_name):
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1. Received: num_classes={num_classes!r}")
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None or len(shape) != 3 or shape[2] != 3
        or any(d is not None and (not isinstance(d, numbers.Integral) or isinstance(d, bool) or d < 1)
               for d in shape[:2])
    ):
        raise ValueError(
            "input_shape must be (H, W, 3) with H, W positive ints or None (3 = preprocessed BGR). "
            f"Received: input_shape={input_shape!r}"
        )
    if (
        not isinstance(width_multiplier, numbers.Real) or isinstance(width_multiplier, bool)
        or not 0 < float(width_multiplier) < math.inf
    ):
        raise ValueError(f"width_multiplier must be a positive number. Received: width_multiplier={width_multiplier!r}")
    if backbone_weights is not None:
        if not (isinstance(backbone_weights, (str, os.PathLike))):
            raise ValueError(
                'backbone_weights must be None, "imagenet" or a path to a weights file. '
                f"Received: backbone_weights={backbone_weights!r}"
            )
        if float(width_multiplier) != 1.0:
            raise ValueError(
                "Pretrained backbone weights need the full-width network (width_multiplier=1.0). "
                f"Received: width_multiplier={width_multiplier!r} with backbone_weights={str(backbone_weights)!r}"
            )
        if backbone_weights != "imagenet" and not os.path.isfile(backbone_weights):
            raise FileNotFoundError(
                f"Backbone weights file not found. Received: backbone_weights={str(backbone_weights)!r}"
            )
    if not isinstance(freeze_bn, bool):
        raise ValueError(f"freeze_bn must be a bool. Received: freeze_bn={freeze_bn!r}")
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0 <= float(dropout) < 1:
        raise ValueError(f"dropout must be a number in [0, 1). Received: dropout={dropout!r}")
    if not isinstance(msc_training_outputs, bool):
        raise ValueError(f"msc_training_outputs must be a bool. Received: msc_training_outputs={msc_training_outputs!r}")
    if msc_training_outputs and msc_scales is None:
        raise ValueError(
            "msc_training_outputs=True needs msc_scales (e.g. (1.0, 0.75, 0.5)). "
            f"Received: msc_scales={msc_scales!r}"
        )
    if model_name is not None and (not isinstance(model_name, str) or not model_name or "/" in model_name):
        raise ValueError(f"model_name must be a non-empty string without '/'. Received: model_name={model_name!r}")
    return shape


def build_model(
    name,
    num_classes=21,
    backbone_weights=None,
    input_shape=(None, None, 3),
    width_multiplier=1.0,
    freeze_bn=True,
    dropout=0.5,
    msc_scales=None,
    msc_training_outputs=False,
    model_name=None,
):
    """Builds a DeepLab v1/v2 network as a functional Keras model.

    Models (see `available_models()`; DeepLab v1, Chen et al., ICLR 2015,
    https://arxiv.org/abs/1412.7062; DeepLab v2, Chen et al., TPAMI 2017,
    https://arxiv.org/abs/1606.00915):
      - "vgg16_largefov": VGG16, pool4/pool5 stride 1, conv5 dilation 2,
        fc6 3x3 rate 12 (1024) - fc7 1x1 (1024) - fc8 1x1 (C), dropout 0.5.
      - "vgg16_aspp_s" / "vgg16_aspp_l": four fc6-fc7-fc8 branches with rates
        {2, 4, 8, 12} / {6, 12, 18, 24}, logits summed.
      - "resnet101_aspp": ResNet-101 v1, conv4_x dilation 2, conv5_x dilation 4,
        four 3x3 convs 2048 -> C with rates {6, 12, 18, 24}, summed.

    Args:
      name: one of `available_models()`.
      num_classes: C, >= 1 (21 for PASCAL VOC).
      backbone_weights: None (random init), "imagenet" (keras.applications
        weights, downloaded by Keras), or a path to a keras.applications
        VGG16/ResNet101 weights file (.h5 or .weights.h5; VGG fc6/fc7 are
        decimated from fc1/fc2 when the file has them), or a released DeepLab
        .caffemodel / .pth or DeepLab .keras whose backbone (and VGG fc6/fc7)
        is taken, e.g. the MS-COCO `init.caffemodel` (see `models.weights`).
      input_shape: (H, W, 3); H, W may be None (any size).
      width_multiplier: scales every conv width of backbone and fc6/fc7 (small
        CPU models); must be 1.0 with backbone_weights.
      freeze_bn: ResNet BatchNorm frozen (moving statistics and affine
        parameters fixed, inference mode in `fit`), as in DeepLab.
      dropout: dropout after fc6 and fc7 of the VGG heads (0 disables; the
        ResNet ASPP head has none).
      msc_scales: e.g. (1.0, 0.75, 0.5) to wrap the model in `wrap_msc`.
      msc_training_outputs: with msc_scales, return the dict of fused and
        per-scale logits (for the 4 training losses).
      model_name: Keras name of the returned model (default: `name`, or
        f"{name}_msc" with MSC).

    Returns:
      keras.Model: images float32 [B, H, W, 3] (preprocessed, Caffe BGR minus
      mean) -> logits float32 [B, h, w, C] (or the MSC dict), with (h, w) =
      `strides.logits_size(backbone, (H, W))`: Caffe's pool arithmetic,
      e.g. 321 -> 41, 513 -> 65, 375x500 -> 48x64 (VGG16) / 48x63 (ResNet).

    Raises:
      ValueError: a bad argument, named with its value; a weights file whose
        layers do not match (naming the layer).
      FileNotFoundError: backbone_weights path missing.

    Example:
      >>> model = build_model("vgg16_largefov", num_classes=21)
      >>> model.count_params()
      20505429
      >>> small = build_model("resnet101_aspp", width_multiplier=0.125)
      >>> small(np.zeros((1, 321, 321, 3), "float32")).shape
      TensorShape([1, 41, 41, 21])
    """
    spec = get_spec(name)
    shape = _check_args(num_classes, backbone_weights, input_shape, width_multiplier, freeze_bn,
                        dropout, msc_scales, msc_training_outputs, model_name)
    if msc_scales is not None:
        check_scales(msc_scales)
        # The shared network sees several input sizes: leave its H, W free.
        base_shape = (None, None, 3)
        outer_name = model_name or f"{name}_msc"
        base_name = name if name != outer_name else f"{name}_base"
    else:
        base_shape, base_name = shape, model_name or name

    images = keras.Input(shape=base_shape, name="images")
    if spec.backbone == "vgg16":
        features, _ = vgg16_backbone(images, width_multiplier, output_stride=OUTPUT_STRIDE)
        if spec.head == "largefov":
            logits = heads.largefov_head(features, num_classes, spec.rates[0], width_multiplier, dropout)
        else:
            logits = heads.vgg_aspp_head(features, num_classes, spec.rates, width_multiplier, dropout)
    else:
        features = resnet101_backbone(images, width_multiplier, freeze_bn, output_stride=OUTPUT_STRIDE)
        logits = heads.resnet_aspp_head(features, num_classes, spec.rates)
    # float32 logits even under a mixed-precision policy (softmax / loss / CRF).
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    model = keras.Model(images, logits, name=base_name)

    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights, spec.backbone)
    if msc_scales is None:
        return model
    outer = wrap_msc(model, msc_scales, training_outputs=msc_training_outputs, name=outer_name)
    if shape[:2] != (None, None):
        fixed = keras.Input(shape=shape, name="images")
        outer = keras.Model(fixed, outer(fixed), name=outer_name)
    return outer


def classifier_layers(model):
    """The layers DeepLab trains with 10x the base learning rate.

    fc8 (LargeFOV), fc8_1..fc8_4 (VGG ASPP) or aspp_1..aspp_4 (ResNet ASPP),
    also inside an MSC wrapper (nested model).

    Args:
      model: a model from `build_model` / `wrap_msc`.

    Returns:
      list[keras.layers.Layer], in model order, each once.

    Example:
      >>> [l.name for l in classifier_layers(build_model("vgg16_aspp_l", width_multiplier=0.125))]
      ['fc8_1', 'fc8_2', 'fc8_3', 'fc8_4']
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model. Received: model={model!r}")
    found, seen = [], set()

    def visit(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                visit(layer)
            elif _CLASSIFIER_NAME.match(layer.name) and id(layer) not in seen:
                seen.add(id(layer))
                found.append(layer)

    visit(model)
    return found
