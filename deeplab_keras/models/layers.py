"""Custom Keras layers of the DeepLab models: Caffe pooling, logit resizing, input rescaling.

`caffe_max_pool` / `caffe_ave_pool` reproduce Caffe's pooling arithmetic (ceil
mode, AVE dividing by the window including padding) with builtin PAD,
MAX_POOL_2D and AVERAGE_POOL_2D ops (no Flex in TFLite).

Both are thin wrappers around `tf.image.resize` (bilinear, half-pixel centres), the
op that TFLite (RESIZE_BILINEAR) and ONNX (Resize) convert directly. They are
registered with Keras so that `.keras` files load with plain
`keras.models.load_model`.
"""

import fractions
import math
import numbers

import keras
import tensorflow as tf


def caffe_max_pool(x, kernel, stride, pad, name, pad_name):
    """Caffe MAX pooling (ceil mode) of a non-negative (post-ReLU) feature map.

    Caffe's output size is ceil((n + 2p - k) / s) + 1 (`strides.caffe_pool_size`).
    Padding p on the top/left and p + s - 1 on the bottom/right, then a 'valid'
    pool, gives exactly that size at every n, with windows starting at -p as in
    Caffe (TF 'same' starts them at 0 for even n, shifting the map). Zero padding
    is exact because the input is >= 0 and every window holds at least one real
    pixel; Caffe's "last window starts in the padding" case cannot occur while
    p + s <= k, which is checked.

    Args:
      x: float [B, H, W, C], values >= 0.
      kernel, stride, pad: Caffe `pooling_param`.
      name: name of the pooling layer; pad_name: name of the padding layer.

    Returns:
      float [B, caffe_pool_size(H), caffe_pool_size(W), C].
    """
    if pad + stride > kernel:
        raise ValueError(
            "caffe_max_pool needs pad + stride <= kernel. "
            f"Received: kernel={kernel}, stride={stride}, pad={pad}"
        )
    if stride == 1 and kernel == 2 * pad + 1:
        # Size-preserving: TF 'same' pads symmetrically and ignores the padding, as Caffe MAX.
        return keras.layers.MaxPooling2D(kernel, strides=1, padding="same", name=name)(x)
    x = keras.layers.ZeroPadding2D(((pad, pad + stride - 1), (pad, pad + stride - 1)), name=pad_name)(x)
    return keras.layers.MaxPooling2D(kernel, strides=stride, padding="valid", name=name)(x)


def caffe_ave_pool(x, kernel, pad, name, pad_name):
    """Caffe AVE pooling with stride 1 and kernel = 2 * pad + 1 (LargeFOV's pool5a).

    Caffe divides by the window clipped to [-p, n + p), which for these settings
    is always the full k x k window: the mean includes the zero padding (sum/k^2),
    unlike Keras AveragePooling2D(padding="same"), which excludes it. Zero
    padding followed by a 'valid' average pool is that exactly.

    Returns:
      float [B, H, W, C].
    """
    if kernel != 2 * pad + 1:
        raise ValueError(f"caffe_ave_pool needs kernel = 2 * pad + 1. Received: kernel={kernel}, pad={pad}")
    x = keras.layers.ZeroPadding2D(pad, name=pad_name)(x)
    return keras.layers.AveragePooling2D(kernel, strides=1, padding="valid", name=name)(x)


def _check_size(size_hw, name="size_hw"):
    """Static (int, int) sizes must be positive; tensors are passed through."""
    if isinstance(size_hw, (tf.Tensor, tf.Variable)) or keras.ops.is_tensor(size_hw):
        return size_hw
    try:
        h, w = size_hw
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair (height, width). Received: {name}={size_hw!r}"
        ) from None
    for v in (h, w):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(
                f"{name} must hold two positive integers. Received: {name}={size_hw!r}"
            )
    return (int(h), int(w))


def _bilinear(x, size, align_corners):
    if align_corners:  # Caffe's Interp; TFLite RESIZE_BILINEAR(align_corners=True), ONNX Resize
        return tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
    return tf.image.resize(x, size, method="bilinear")


def resize_logits(logits, size_hw, align_corners=False):
    """Bilinearly resizes score maps, e.g. from 1/8 resolution to the input size.

    DeepLab upsamples the stride-8 logits bilinearly before the argmax / the CRF
    (Chen et al., DeepLab v2, TPAMI 2017, Sec. 3.1). Half-pixel centres
    (`align_corners=False`) by default, like deeplab-pytorch; `align_corners=True`
    is Caffe's Interp layer.

    Args:
      logits: float [B, h, w, C] (tf.Tensor or NumPy array).
      size_hw: target (H, W): two positive ints, or an int32 tensor of shape [2].
      align_corners: Caffe Interp sampling (corner pixels aligned).

    Returns:
      float32 [B, H, W, C].

    Example:
      >>> y = resize_logits(tf.zeros([1, 41, 41, 21]), (321, 321))
      >>> y.shape
      TensorShape([1, 321, 321, 21])
    """
    size_hw = _check_size(size_hw)
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank is not None and logits.shape.rank != 4:
        raise ValueError(
            f"logits must be rank 4 [B, h, w, C]. Received: logits.shape={logits.shape}"
        )
    out = _bilinear(logits, size_hw, align_corners)
    return tf.cast(out, tf.float32)


@keras.saving.register_keras_serializable(package="deeplab_keras")
class ResizeLogits(keras.layers.Layer):
    """Keras layer form of `resize_logits`: logits at input (or a fixed) resolution.

    Called on `[logits, reference]` it resizes `logits` to the spatial size of
    `reference` (typically the model input image); called on a single tensor it
    resizes to the fixed `size` given at construction.

    Args:
      size: optional fixed (H, W). Required when the layer is called on one tensor.
      align_corners: Caffe Interp sampling instead of half-pixel centres.

    Call args:
      inputs: `logits` float [B, h, w, C], or `[logits, reference]` with
        reference [B, H, W, ...].

    Returns:
      float32 [B, H, W, C].

    Example:
      >>> from deeplab_keras.models import build_model
      >>> model = build_model("vgg16_largefov", width_multiplier=0.125)
      >>> full = ResizeLogits()([model.output, model.input])
      >>> full_res = keras.Model(model.input, full)
    """

    def __init__(self, size=None, align_corners=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = None if size is None else _check_size(size, "size")
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    "ResizeLogits takes logits or [logits, reference]. "
                    f"Received: {len(inputs)} tensors"
                )
            logits, reference = inputs
            target = tf.shape(reference)[1:3]
        else:
            if self.size is None:
                raise ValueError(
                    "ResizeLogits called on a single tensor needs a fixed size. "
                    "Received: size=None (pass size=(H, W) or call on [logits, reference])"
                )
            logits, target = inputs, self.size
        return resize_logits(logits, target, self.align_corners)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            logits_shape, ref_shape = input_shape
            return (logits_shape[0], ref_shape[1], ref_shape[2], logits_shape[3])
        return (input_shape[0], self.size[0], self.size[1], input_shape[3])

    def get_config(self):
        config = super().get_config()
        config["size"] = None if self.size is None else list(self.size)
        config["align_corners"] = self.align_corners
        return config


def caffe_interp_factors(scale):
    """(shrink, zoom) integers with zoom / shrink = scale, as Caffe's Interp takes them (0.75 -> (4, 3))."""
    frac = fractions.Fraction(float(scale)).limit_denominator(16)
    if abs(float(frac) - float(scale)) > 1e-9:
        raise ValueError(f"scale is not a ratio of small integers (Caffe Interp). Received: scale={scale!r}")
    return frac.denominator, frac.numerator


def scaled_size(size, scale, caffe=False):
    """Size of an image side after rescaling by `scale`.

    Default: ceil(size * scale), >= 1 (the ceiling keeps every scale at least
    one pixel). caffe=True: Caffe Interp's (size - 1) // shrink + 1, then zoomed
    to h + (h - 1)(zoom - 1), i.e. ((size - 1) // shrink) * zoom + 1
    (375 at 0.75 -> 280, at 0.5 -> 188). Works on Python ints and int32 tensors.
    """
    if caffe:
        shrink, zoom = caffe_interp_factors(scale)
        return ((size - 1) // shrink) * zoom + 1
    if isinstance(size, numbers.Integral):
        return max(1, math.ceil(size * scale))
    size = tf.cast(size, tf.float32) * scale
    return tf.maximum(tf.cast(tf.math.ceil(size), tf.int32), 1)


@keras.saving.register_keras_serializable(package="deeplab_keras")
class ScaleImage(keras.layers.Layer):
    """Bilinearly rescales an image batch by a constant factor (the MSC inputs).

    Output size is ceil(H * scale) x ceil(W * scale), resized with half-pixel
    centres; with caffe_interp=True it is Caffe Interp's size and sampling
    (`scaled_size(..., caffe=True)`, aligned corners), as in the released MSC
    nets. Scale 1 is the identity.

    Args:
      scale: positive float.
      caffe_interp: Caffe Interp sizes and align-corners sampling.

    Call args:
      images: float [B, H, W, C].

    Returns:
      float32 [B, ceil(H*scale), ceil(W*scale), C].
    """

    def __init__(self, scale, caffe_interp=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(scale, numbers.Real) or not (0 < float(scale) < math.inf):
            raise ValueError(f"scale must be a positive number. Received: scale={scale!r}")
        self.scale = float(scale)
        self.caffe_interp = bool(caffe_interp)
        if self.caffe_interp:
            caffe_interp_factors(self.scale)

    def call(self, images):
        if self.scale == 1.0:
            return images
        hw = tf.shape(images)[1:3]
        size = scaled_size(hw, self.scale, caffe=self.caffe_interp)
        return tf.cast(_bilinear(images, size, self.caffe_interp), images.dtype)

    def compute_output_shape(self, input_shape):
        def side(s):
            return None if s is None else scaled_size(s, self.scale, caffe=self.caffe_interp)

        return (input_shape[0], side(input_shape[1]), side(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config["scale"] = self.scale
        config["caffe_interp"] = self.caffe_interp
        return config
