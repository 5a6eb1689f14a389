"""Dilated ("atrous") convolutions lowered to one native dilated conv where TF can.

DeepLab's dilated convolutions (Chen et al., DeepLab v1, ICLR 2015, Sec. 3.1;
v2, TPAMI 2017, Sec. 3.1) are `keras.layers.Conv2D(dilation_rate=r)`. On the
TensorFlow backend Keras lowers those through `tf.nn.convolution`, which on
every device turns a dilated conv into SpaceToBatchND -> Conv2D ->
BatchToSpaceND, because TF's own (Eigen) CPU kernels have no dilated backward
pass. On a small map with a large rate (fc6, rate 12, 17x17) that is r*r = 144
tiny convolutions per image, forward and backward; the dilated layers then
dominate the training step.

The oneDNN kernels that TF uses on x86 CPUs by default (`TF_ENABLE_ONEDNN_OPTS`,
on unless set to 0), and cuDNN on GPUs, run a dilated Conv2D and both of its
gradients natively. `AtrousConv2D` is a `keras.layers.Conv2D` with the same
weights, names, config and maths that calls `tf.nn.conv2d(..., dilations=r)`
directly when the kernels at hand support it (checked once by a tiny probe),
and otherwise falls back to Keras's own space-to-batch lowering. Results are
the same to float32 round-off (tests/test_atrous.py).

The lowering is chosen when a layer is traced:
- "auto" (default): "native" if the probe passes, else "space_to_batch";
- "native": always `tf.nn.conv2d` with dilations (fails on the backward pass
  where the kernels cannot do it);
- "space_to_batch": always Keras's form.
Set it with `set_atrous_lowering` or the environment variable
`DEEPLAB_KERAS_ATROUS` (read once, on first use).

Exports: a native dilated Conv2D converts to one TFLite CONV_2D with dilation
factors and to one ONNX Conv with `dilations`, so the graphs carry no
SpaceToBatchND / BatchToSpaceND even with dynamic H, W.

Example:
    >>> layer = AtrousConv2D(64, 3, padding="same", dilation_rate=12, name="fc6")
    >>> layer(np.zeros((1, 17, 17, 32), "float32")).shape
    TensorShape([1, 17, 17, 64])
"""

import contextlib
import os

import keras
import tensorflow as tf

LOWERINGS = ("auto", "native", "space_to_batch")
ENV_VAR = "DEEPLAB_KERAS_ATROUS"

_requested = None  # one of LOWERINGS once read
_native_supported = {}  # dtype name -> result of the probe (bool) once run


def set_atrous_lowering(lowering):
    """Chooses how `AtrousConv2D` lowers dilated convolutions from now on.

    Layers already traced inside a `tf.function` keep the form they were traced
    with; build (or re-trace) the model after calling this.

    Args:
      lowering: "auto", "native" or "space_to_batch" (see the module docstring).

    Raises:
      ValueError: an unknown lowering.
    """
    global _requested
    if lowering not in LOWERINGS:
        raise ValueError(f"lowering must be one of {LOWERINGS}. Received: lowering={lowering!r}")
    _requested = lowering


@contextlib.contextmanager
def atrous_lowering(lowering):
    """Context manager form of `set_atrous_lowering`; restores the previous choice.

    Example:
        >>> spec = tf.TensorSpec([1, 65, 65, 3], tf.float32)
        >>> with atrous_lowering("space_to_batch"):
        ...     fn = tf.function(model).get_concrete_function(spec)
    """
    global _requested
    previous = _requested
    set_atrous_lowering(lowering)
    try:
        yield
    finally:
        _requested = previous


def get_atrous_lowering():
    """The requested lowering: `set_atrous_lowering`'s, else $DEEPLAB_KERAS_ATROUS, else "auto"."""
    global _requested
    if _requested is None:
        value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if value not in LOWERINGS:
            raise ValueError(f"${ENV_VAR} must be one of {LOWERINGS}. Received: {ENV_VAR}={value!r}")
        _requested = value
    return _requested


def native_dilated_conv_supported(dtype="float32"):
    """Whether this TF build runs a dilated Conv2D and its gradients natively.

    Probed per compute dtype: oneDNN runs float32 and bfloat16 dilated backprop,
    but a float16 dilated Conv2DBackpropInput falls back to Eigen, which refuses it.

    Runs (once, eagerly, a few milliseconds) the forward and both gradients of a
    tiny dilated conv. False on CPUs without oneDNN (TF's Eigen kernels refuse
    dilated backprop); True with oneDNN on x86 and with cuDNN.
    """
    dtype = tf.as_dtype(dtype)
    if dtype.name not in _native_supported:
        # init_scope: eager even when first asked inside a tf.function trace. It
        # also pauses gradient tapes, so the two gradient ops are called directly.
        with tf.init_scope():
            x = tf.ones([1, 5, 5, 1], dtype)
            w = tf.ones([3, 3, 1, 1], dtype)
            dilations = [1, 2, 2, 1]
            try:
                y = tf.nn.conv2d(x, w, 1, "SAME", dilations=2)
                dx = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=w, out_backprop=tf.ones_like(y),
                    strides=[1, 1, 1, 1], padding="SAME", dilations=dilations)
                dw = tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(w), out_backprop=tf.ones_like(y),
                    strides=[1, 1, 1, 1], padding="SAME", dilations=dilations)
                # All ones, 3x3 at rate 2 on 5x5: the centre output sees all 9 taps,
                # and both gradients of sum(y) add up to sum(y) (one per valid tap).
                total = float(tf.reduce_sum(y))
                _native_supported[dtype.name] = (float(y[0, 2, 2, 0]) == 9.0
                                     and float(tf.reduce_sum(dx)) == total
                                     and float(tf.reduce_sum(dw)) == total)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                    tf.errors.NotFoundError):
                _native_supported[dtype.name] = False
    return _native_supported[dtype.name]


def uses_native_lowering(dtype="float32"):
    """True when dilated `AtrousConv2D` layers of this compute dtype traced now use the native conv."""
    lowering = get_atrous_lowering()
    if lowering == "auto":
        return native_dilated_conv_supported(dtype)
    return lowering == "native"


@keras.saving.register_keras_serializable(package="deeplab_keras")
class AtrousConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose dilated form runs as one native dilated conv.

    Same constructor, weights (`kernel` [kh, kw, Cin, Cout], `bias` [Cout]),
    names and config as `keras.layers.Conv2D`, so checkpoints and ImageNet
    weights load unchanged; only how a `dilation_rate > 1` is computed differs
    (see the module docstring). Undilated, grouped or strided-and-dilated convs
    use Keras's own path.

    Call args:
      inputs: float [B, H, W, Cin] (channels_last) or [B, Cin, H, W].

    Returns:
      float [B, H', W', Cout], exactly as `keras.layers.Conv2D`.
    """

    def convolution_op(self, inputs, kernel):
        dilated = any(d > 1 for d in self.dilation_rate)
        strided = any(s > 1 for s in self.strides)
        if not dilated or strided or self.groups != 1 or not uses_native_lowering(inputs.dtype):
            return super().convolution_op(inputs, kernel)
        data_format = "NHWC" if self.data_format == "channels_last" else "NCHW"
        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=1,
            padding=self.padding.upper(),
            dilations=list(self.dilation_rate),
            data_format=data_format,
        )
