"""The one output-stride setting and the strides/dilations/widths derived from it.

DeepLab keeps the feature maps at 1/8 of the input by removing the stride of the
last downsampling layers and dilating every later convolution by the stride it
removed (the "atrous algorithm", Chen et al., DeepLab v1, ICLR 2015, Sec. 3.1).
`strides_to_dilations` does that bookkeeping once, for any backbone, so that no
dilation is written down by hand (the same scheme as timm's `output_stride`).
"""

import math
import numbers

OUTPUT_STRIDE = 8
"""Output stride of every DeepLab model: logits are about H/8 x W/8; the exact size
follows Caffe's layer arithmetic (`logits_size`)."""


def strides_to_dilations(strides, output_stride=OUTPUT_STRIDE, input_stride=1):
    """Turns the nominal strides of a backbone's downsampling points into (stride, dilation).

    Walking the downsampling points in order, a stride that would take the
    cumulative stride past `output_stride` is replaced by 1 and multiplied into
    the dilation of every layer after it.

    Args:
      strides: nominal stride of each downsampling point, e.g. VGG16 pool1..pool5
        `[2, 2, 2, 2, 2]`, or ResNet conv2_x..conv5_x `[1, 2, 2, 2]`.
      output_stride: wanted stride of the last feature map.
      input_stride: stride already applied before the first point (ResNet stem: 4).

    Returns:
      list of (stride, dilation) per point: the stride to use there and the
      dilation of the layers that follow it.

    Raises:
      ValueError: if `output_stride` cannot be reached exactly.

    Example:
      >>> strides_to_dilations([2, 2, 2, 2, 2], 8)
      [(2, 1), (2, 1), (2, 1), (1, 2), (1, 4)]
    """
    if not isinstance(output_stride, numbers.Integral) or output_stride < 1:
        raise ValueError(
            f"output_stride must be a positive integer. Received: output_stride={output_stride!r}"
        )
    current, dilation, out = input_stride, 1, []
    for s in strides:
        if current * s > output_stride:
            dilation *= s
            out.append((1, dilation))
        else:
            current *= s
            out.append((s, dilation))
    if current != output_stride:
        raise ValueError(
            f"output_stride must be reachable with strides {list(strides)} after an "
            f"input stride of {input_stride} (possible: "
            f"{sorted({input_stride * math.prod(strides[:i]) for i in range(len(strides) + 1)})}). "
            f"Received: output_stride={output_stride}"
        )
    return out


def scale_width(filters, width_multiplier):
    """Number of filters of a reduced-width model: round(filters * multiplier), >= 1."""
    return max(1, int(round(filters * width_multiplier)))


def caffe_conv_size(size, kernel, stride=1, pad=0, dilation=1):
    """Caffe convolution output size: floor((in + 2p - d(k - 1) - 1) / s) + 1."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def caffe_pool_size(size, kernel, stride, pad):
    """Caffe (and PyTorch ceil_mode) pooling output size.

    out = ceil((in + 2p - k) / s) + 1, minus one when the last window would start
    in the right padding (Caffe's `PoolingLayer::Reshape`).
    """
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def logits_size(backbone, size_hw):
    """Spatial size of the logits of a DeepLab model for an input of size_hw.

    The networks follow the released Caffe nets layer by layer (DESIGN.md Sec. 6):
    - VGG16: pool1..pool3 are MAX k3 s2 p1 in ceil mode, so each maps
      n -> floor(n / 2) + 1; every conv and the stride-1 pools keep the size.
      375x500 -> 48x64; 321 -> 41; 513 -> 65.
    - ResNet-101: conv1 7x7 s2 p3 maps n -> ceil(n / 2), pool1 MAX k3 s2 p1 ceil
      (deeplab-pytorch's `MaxPool2d(3, 2, 1, ceil_mode=True)`) n -> floor(n / 2) + 1,
      res3a's stride-2 1x1 conv n -> ceil(n / 2). 375x500 -> 48x63; 321 -> 41.
    For H = 8k + 1 both give k + 1 = ceil(H / 8); other sizes differ from ceil(H/8)
    by up to one row/column.

    Args:
      backbone: "vgg16" or "resnet101".
      size_hw: (H, W) positive ints.

    Returns:
      (h, w) ints.

    Example:
      >>> logits_size("vgg16", (375, 500)), logits_size("resnet101", (375, 500))
      ((48, 64), (48, 63))
    """
    def side(n):
        if backbone == "vgg16":
            for _ in range(3):
                n = caffe_pool_size(n, 3, 2, 1)
            return n
        if backbone == "resnet101":
            n = caffe_conv_size(n, 7, 2, 3)
            n = caffe_pool_size(n, 3, 2, 1)
            return caffe_conv_size(n, 1, 2, 0)
        raise ValueError(f'backbone must be "vgg16" or "resnet101". Received: backbone={backbone!r}')

    h, w = size_hw
    for v in (h, w):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"size_hw must hold two positive integers. Received: size_hw={size_hw!r}")
    return side(int(h)), side(int(w))
