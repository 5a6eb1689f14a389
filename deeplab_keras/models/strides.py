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
"""Output stride of every DeepLab model: logits are [B, ceil(H/8), ceil(W/8), C]."""


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
