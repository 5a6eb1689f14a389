"""VGG16 backbone of DeepLab v1/v2, with keras.applications layer names.

Differences from `keras.applications.VGG16` (Chen et al., DeepLab v1, ICLR 2015,
Sec. 3.1 and 4.1; DeepLab v2, TPAMI 2017, Sec. 4.1):
- every pool is MAX 3x3 with pad 1 in Caffe's ceil mode instead of 2x2
  (`layers.caffe_max_pool`): a stride-2 pool maps n -> floor(n / 2) + 1, so the
  features are (floor(n/2)+1 three times) per side, e.g. 375x500 -> 48x64;
- the pools after which the cumulative stride would pass `output_stride` get
  stride 1 (pool4, pool5 at stride 8) and the convolutions after them are
  dilated by the removed stride (conv5_x: dilation 2), derived by
  `strides_to_dilations`.
The 13 conv layers keep the names and shapes of keras.applications
(`block1_conv1` ... `block5_conv3`), so ImageNet weights load by name.
"""

import keras

from deeplab_keras.models.atrous import AtrousConv2D
from deeplab_keras.models.layers import caffe_max_pool
from deeplab_keras.models.strides import OUTPUT_STRIDE, scale_width, strides_to_dilations

# (filters, number of 3x3 convs) of the five VGG16 blocks; each block ends in a pool.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
VGG16_POOL_STRIDES = (2, 2, 2, 2, 2)


def vgg16_backbone(x, width_multiplier=1.0, output_stride=OUTPUT_STRIDE):
    """Applies VGG16 conv1_1 ... pool5 at the given output stride.

    Args:
      x: float32 [B, H, W, 3] preprocessed images (Caffe BGR minus mean).
      width_multiplier: scales every conv width (1.0 = VGG16).
      output_stride: stride of the returned feature map (8, 16 or 32).

    Returns:
      (features, dilation): float32 [B, h, w, 512 * width] with (h, w) =
      `strides.logits_size("vgg16", (H, W))` at output stride 8
      and the dilation accumulated after pool5 (4 at output stride 8).
    """
    schedule = strides_to_dilations(VGG16_POOL_STRIDES, output_stride)
    dilation = 1
    for block, ((filters, convs), (stride, next_dilation)) in enumerate(
        zip(VGG16_BLOCKS, schedule), start=1
    ):
        for i in range(1, convs + 1):
            x = AtrousConv2D(
                scale_width(filters, width_multiplier),
                3,
                padding="same",
                dilation_rate=dilation,
                activation="relu",
                name=f"block{block}_conv{i}",
            )(x)
        x = caffe_max_pool(x, 3, stride, 1, name=f"block{block}_pool", pad_name=f"block{block}_pad")
        dilation = next_dilation
    return x, dilation


def vgg16_backbone_layer_names():
    """Names of the VGG16 layers that carry ImageNet weights (the 13 convs)."""
    return [
        f"block{b}_conv{i}" for b, (_, convs) in enumerate(VGG16_BLOCKS, start=1)
        for i in range(1, convs + 1)
    ]
