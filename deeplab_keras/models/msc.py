"""Multi-scale inputs (MSC) for any DeepLab model (DeepLab v2, TPAMI 2017, Sec. 3.3).

The same network (shared weights) runs on the image rescaled by each scale;
every score map is bilinearly resized to the scale-1 score map and the maps are
fused by element-wise max. DeepLab trains with one loss on each scale and one on
the fused map, so the wrapper can also return all of them.

Difference from the released Caffe MSC net: Caffe's Interp resizes with aligned
corners and sizes (H-1)//shrink + 1 (then zoom), e.g. 375 -> 280 at 0.75; here
the images are resized with half-pixel centres to ceil(H*s) (375 -> 282) and
the score maps back with half-pixel centres (`tf.image.resize`, the op TFLite
and ONNX convert directly). benchmarks/results/convert.md measures what this
costs against the Caffe-exact MSC reference; `wrap_msc(..., caffe_interp=True)`
resizes as Caffe does (sizes and aligned corners).
"""

import numbers

import keras

from deeplab_keras.models.layers import ResizeLogits, ScaleImage

DEFAULT_SCALES = (1.0, 0.75, 0.5)


def _tag(scale, sep="."):
    return f"{scale:.2f}".replace(".", sep)


def check_scales(scales):
    """Validated tuple of floats: positive, distinct (to 2 decimals), containing 1.0."""
    try:
        values = tuple(scales)
    except TypeError:
        raise ValueError(f"scales must be a sequence of positive numbers. Received: scales={scales!r}") from None
    if not values or any(
        not isinstance(s, numbers.Real) or isinstance(s, bool) or not 0 < float(s) < float("inf")
        for s in values
    ):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers. Received: scales={scales!r}")
    values = tuple(float(s) for s in values)
    if 1.0 not in values:
        raise ValueError(f"scales must contain 1.0 (the reference scale). Received: scales={scales!r}")
    if len({_tag(s) for s in values}) != len(values):
        raise ValueError(f"scales must be distinct to two decimals. Received: scales={scales!r}")
    return values


def wrap_msc(model, scales=DEFAULT_SCALES, training_outputs=False, name=None, caffe_interp=False):
    """Wraps a DeepLab model in multi-scale inputs with max fusion.

    Args:
      model: a model from `build_model` (input [B, H, W, 3], logits at stride 8).
        Its weights are shared by all scales. Build it with input_shape
        (None, None, 3) (the default): it sees several input sizes.
      scales: positive input scales; must include 1.0. Each scale s sees the
        image resized bilinearly to ceil(H*s) x ceil(W*s).
      training_outputs: if True the model returns a dict
        {"fused": [B, h1, w1, C], "scale_1.00": [B, h1, w1, C],
         "scale_0.75": [B, h, w, C], ...} (h1, w1 = `strides.logits_size(backbone, (H, W))`; each scale at its own
        size) so every output can get its own loss; otherwise only the fused map.
      name: Keras model name (default: f"{model.name}_msc").
      caffe_interp: resize as the released Caffe MSC nets do (Interp: sizes
        ((H-1)//shrink)*zoom + 1, aligned corners, for the inputs and for the
        score maps) instead of half-pixel `tf.image.resize` to ceil(H*s).
        Scales must then be ratios of small integers (0.75 = 3/4).

    Returns:
      keras.Model: float32 [B, H, W, 3] -> fused logits float32 [B, h1, w1, C]
      (or the dict above).

    Example:
      >>> from deeplab_keras.models import build_model
      >>> base = build_model("vgg16_largefov", width_multiplier=0.125)
      >>> msc = wrap_msc(base, (1.0, 0.75, 0.5), training_outputs=True)
      >>> sorted(msc(np.zeros((1, 65, 65, 3), "float32")))
      ['fused', 'scale_0.50', 'scale_0.75', 'scale_1.00']
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model. Received: model={model!r}")
    scales = check_scales(scales)
    if tuple(model.input_shape[1:3]) != (None, None) and scales != (1.0,):
        raise ValueError(
            "wrap_msc feeds several input sizes to the model: build it with input_shape="
            f"(None, None, 3). Received: model.input_shape={model.input_shape}"
        )
    if not isinstance(caffe_interp, bool):
        raise ValueError(f"caffe_interp must be a bool. Received: caffe_interp={caffe_interp!r}")
    if not isinstance(training_outputs, bool):
        raise ValueError(f"training_outputs must be a bool. Received: training_outputs={training_outputs!r}")
    images = keras.Input(shape=model.input_shape[1:], name="images")
    per_scale = {}
    for s in scales:
        x = images if s == 1.0 else ScaleImage(s, caffe_interp, name=f"msc_input_{_tag(s, 'p')}")(images)
        per_scale[s] = model(x)
    reference = per_scale[1.0]
    resized = [
        per_scale[s] if s == 1.0
        else ResizeLogits(align_corners=caffe_interp, name=f"msc_resize_{_tag(s, 'p')}")(
            [per_scale[s], reference])
        for s in scales
    ]
    if len(resized) > 1:
        fused = keras.layers.Maximum(name="msc_fused", dtype="float32")(resized)
    else:
        fused = keras.layers.Activation("linear", name="msc_fused", dtype="float32")(reference)
    outputs = fused
    if training_outputs:
        outputs = {"fused": fused, **{f"scale_{_tag(s)}": per_scale[s] for s in scales}}
    return keras.Model(images, outputs, name=name or f"{model.name}_msc")
