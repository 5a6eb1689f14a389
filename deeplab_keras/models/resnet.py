"""ResNet-101 v1 backbone of DeepLab v2, with keras.applications layer names.

As in Caffe's ResNet-101 and `keras.applications.ResNet101`: the stride of a
stage sits on the first 1x1 conv of its first block (and its 1x1 shortcut).
BatchNorm epsilon is 1e-5 (Caffe's default; keras.applications uses 1.001e-5).
The convs keep the keras.applications biases so that ImageNet weights load;
Caffe's ResNet convs have `bias_term: false`, so the caffemodel converter sets
those biases to zero, which computes exactly the Caffe net. pool1 is MAX k3 s2
p1 in ceil mode (deeplab-pytorch's `MaxPool2d(3, 2, 1, ceil_mode=True)`).
For DeepLab v2 (Chen et al., TPAMI 2017, Sec. 4.3) the strides of conv4_x and
conv5_x are removed and their 3x3 convs dilated by 2 and 4; both follow from
output_stride through `strides_to_dilations`. Layer names (`conv1_conv`,
`conv2_block1_1_conv`, ...) match keras.applications so ImageNet weights load
by name.

BatchNorm is frozen by default (DeepLab trains with batch 10 and keeps the
ImageNet statistics and affine parameters): the BN layers are built with
`trainable=False`, which in Keras 3 also makes them run in inference mode
(moving statistics) inside `fit`. Setting `model.trainable = True` afterwards
would unfreeze them again.
"""

import keras

from deeplab_keras.models.atrous import AtrousConv2D
from deeplab_keras.models.layers import caffe_max_pool
from deeplab_keras.models.strides import OUTPUT_STRIDE, scale_width, strides_to_dilations

# (bottleneck filters, blocks, nominal stride) of conv2_x ... conv5_x.
RESNET101_STAGES = ((64, 3, 1), (128, 4, 2), (256, 23, 2), (512, 3, 2))
STEM_STRIDE = 4  # conv1 (7x7/2) and pool1 (3x3/2)
BN_EPSILON = 1e-5  # Caffe BatchNorm default


def _bn(x, name, freeze_bn):
    return keras.layers.BatchNormalization(
        axis=-1, epsilon=BN_EPSILON, trainable=not freeze_bn, name=name
    )(x)


def bottleneck_block(x, filters, stride, dilation, conv_shortcut, freeze_bn, name):
    """ResNet v1 bottleneck: 1x1 (stride) -> 3x3 (dilation) -> 1x1 (4x filters), + shortcut.

    Args:
      x: float32 [B, H, W, Cin].
      filters: bottleneck width; the block outputs 4 * filters channels.
      stride: stride of the first 1x1 conv and of the projection shortcut.
      dilation: dilation rate of the 3x3 conv.
      conv_shortcut: projection (1x1 conv + BN) shortcut instead of identity.
      freeze_bn: build the BN layers frozen (inference mode, not trainable).
      name: block prefix, e.g. "conv4_block1".

    Returns:
      float32 [B, ceil(H/stride), ceil(W/stride), 4 * filters].
    """
    if conv_shortcut:
        shortcut = keras.layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = _bn(shortcut, f"{name}_0_bn", freeze_bn)
    else:
        shortcut = x
    x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = _bn(x, f"{name}_1_bn", freeze_bn)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = AtrousConv2D(
        filters, 3, padding="same", dilation_rate=dilation, name=f"{name}_2_conv"
    )(x)
    x = _bn(x, f"{name}_2_bn", freeze_bn)
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = _bn(x, f"{name}_3_bn", freeze_bn)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def resnet101_backbone(x, width_multiplier=1.0, freeze_bn=True, output_stride=OUTPUT_STRIDE):
    """Applies ResNet-101 v1 conv1 ... conv5_x at the given output stride.

    Args:
      x: float32 [B, H, W, 3] preprocessed images (Caffe BGR minus mean).
      width_multiplier: scales every conv width (1.0 = ResNet-101).
      freeze_bn: BatchNorm in inference mode and not trainable.
      output_stride: 4, 8, 16 or 32.

    Returns:
      float32 [B, h, w, 2048 * width]; at output stride 8, (h, w) =
      `strides.logits_size("resnet101", (H, W))`.
    """
    schedule = strides_to_dilations(
        [s for _, _, s in RESNET101_STAGES], output_stride, input_stride=STEM_STRIDE
    )
    # Caffe conv1 7x7 s2 p3: ceil(H/2), windows from -3, as keras.applications.
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = keras.layers.Conv2D(scale_width(64, width_multiplier), 7, strides=2, name="conv1_conv")(x)
    x = _bn(x, "conv1_bn", freeze_bn)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = caffe_max_pool(x, 3, 2, 1, name="pool1_pool", pad_name="pool1_pad")
    for stage, ((filters, blocks, _), (stride, dilation)) in enumerate(
        zip(RESNET101_STAGES, schedule), start=2
    ):
        width = scale_width(filters, width_multiplier)
        for b in range(1, blocks + 1):
            x = bottleneck_block(
                x,
                width,
                stride=stride if b == 1 else 1,
                dilation=dilation,
                conv_shortcut=b == 1,
                freeze_bn=freeze_bn,
                name=f"conv{stage}_block{b}",
            )
    return x
