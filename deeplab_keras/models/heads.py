"""DeepLab classifier heads: LargeFOV (v1), VGG16 ASPP and ResNet-101 ASPP (v2).

Layer names are fixed (weights and `classifier_layers` depend on them):
- LargeFOV: pool5a (Caffe AVE k3 s1 p1 = sum/9 including the padding; no
  weights) - fc6 (3x3, rate r, 1024) - drop6 - fc7 (1x1, 1024) - drop7 - fc8 (1x1, C).
- VGG16 ASPP: branches k = 1..4 named fc6_k, drop6_k, fc7_k, drop7_k, fc8_k; summed
  by `fc8_sum` (DeepLab v2, TPAMI 2017, Sec. 3.3 and Fig. 7).
- ResNet-101 ASPP: aspp_1 ... aspp_4, 3x3 convs from 2048 channels straight to C,
  summed by `aspp_sum`.
The fc8 / aspp convs are the "classifier" layers DeepLab trains with 10x the base
learning rate; they start from N(0, 0.01) weights and zero biases, as in DeepLab's
Caffe prototxts.
"""

import keras

from deeplab_keras.models.atrous import AtrousConv2D
from deeplab_keras.models.layers import caffe_ave_pool
from deeplab_keras.models.strides import scale_width

FC_WIDTH = 1024  # fc6/fc7 filters of LargeFOV and of every VGG ASPP branch


def classifier_initializer():
    return keras.initializers.RandomNormal(stddev=0.01)


def fc_branch(x, num_classes, rate, width_multiplier, dropout, suffix=""):
    """fc6 (3x3, dilation `rate`) -> fc7 (1x1) -> fc8 (1x1, num_classes), ReLU + dropout.

    Args:
      x: float32 [B, h, w, 512 * width] pool5 features.
      num_classes: C.
      rate: dilation of fc6 (12 for LargeFOV).
      width_multiplier: scales fc6/fc7 widths (1024 at 1.0).
      dropout: dropout rate after fc6 and fc7 (0 disables).
      suffix: "" for LargeFOV, "_k" for ASPP branch k.

    Returns:
      float32 [B, h, w, C] logits of the branch.
    """
    width = scale_width(FC_WIDTH, width_multiplier)
    x = AtrousConv2D(
        width, 3, padding="same", dilation_rate=rate, activation="relu", name=f"fc6{suffix}"
    )(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"drop6{suffix}")(x)
    x = keras.layers.Conv2D(width, 1, activation="relu", name=f"fc7{suffix}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"drop7{suffix}")(x)
    return keras.layers.Conv2D(
        num_classes,
        1,
        kernel_initializer=classifier_initializer(),
        bias_initializer="zeros",
        name=f"fc8{suffix}",
    )(x)


def largefov_head(x, num_classes, rate, width_multiplier, dropout):
    """DeepLab v1 LargeFOV head: pool5a, then fc6 (rate 12 at output stride 8) - fc7 - fc8.

    pool5a is the AVE pool (k3, s1, p1) of the official DeepLab-LargeFOV
    test.prototxt between pool5 and fc6. Returns [B, h, w, C].
    """
    x = caffe_ave_pool(x, 3, 1, name="pool5a", pad_name="pool5a_pad")
    return fc_branch(x, num_classes, rate, width_multiplier, dropout)


def vgg_aspp_head(x, num_classes, rates, width_multiplier, dropout):
    """DeepLab v2 VGG16 ASPP: one fc6-fc7-fc8 branch per rate, logits summed. Returns [B, h, w, C]."""
    branches = [
        fc_branch(x, num_classes, rate, width_multiplier, dropout, suffix=f"_{k}")
        for k, rate in enumerate(rates, start=1)
    ]
    return keras.layers.Add(name="fc8_sum")(branches)


def resnet_aspp_head(x, num_classes, rates):
    """DeepLab v2 ResNet ASPP: 3x3 convs (rates) from the features to C, summed. Returns [B, h, w, C]."""
    branches = [
        AtrousConv2D(
            num_classes,
            3,
            padding="same",
            dilation_rate=rate,
            kernel_initializer=classifier_initializer(),
            bias_initializer="zeros",
            name=f"aspp_{k}",
        )(x)
        for k, rate in enumerate(rates, start=1)
    ]
    return keras.layers.Add(name="aspp_sum")(branches)
