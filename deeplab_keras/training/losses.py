"""The DeepLab training loss: per-pixel softmax cross-entropy at output stride 8.

DeepLab v1/v2 (ICLR 2015 Sec. 3.1 / TPAMI 2017 Sec. 4) compute the loss on the
stride-8 score map: the ground truth is subsampled by nearest neighbour to the
logit size (never interpolated), pixels labelled 255 are ignored, and the loss is
the mean over the remaining pixels.

Nearest-neighbour reduction follows the network's geometry: with 'same'
stride-2 convs/pools on an odd input, logit i of an H -> ceil(H/8) map sits on
input pixel 8i, so `reduce_labels` samples input row round(i * (H-1) / (h-1))
(for 321 -> 41 exactly row 8i). The same rule serves the MSC outputs at scales
0.75 and 0.5, whose logit grids span the same image.

Under `tf.distribute`, the mean is over the valid pixels of the *global* batch:
each replica divides its sum by the all-reduced pixel count, so the summed
gradients equal those of one device seeing the whole batch, whatever the split
of ignored pixels between replicas.
"""

import keras
import tensorflow as tf

from deeplab_keras.palette import IGNORE_LABEL


def reduce_labels(labels, size_hw):
    """Nearest-neighbour subsampling of label maps to a logit grid.

    Args:
      labels: int [B, H, W] (or [B, H, W, 1]) class ids, 255 = ignore.
      size_hw: (h, w) of the logits, ints or scalar int tensors.

    Returns:
      int32 [B, h, w]: output pixel (i, j) is input pixel
      (round(i*(H-1)/(h-1)), round(j*(W-1)/(w-1))); 0 when h (w) is 1.

    Example:
        >>> reduce_labels(tf.zeros([2, 321, 321], tf.int32), (41, 41)).shape
        TensorShape([2, 41, 41])
    """
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 4:
        labels = tf.squeeze(labels, axis=-1)
    if labels.shape.rank != 3:
        raise ValueError(f"labels must be [B, H, W] or [B, H, W, 1]. Received: shape={labels.shape}")
    labels = tf.cast(labels, tf.int32)
    shape = tf.shape(labels)

    def indices(in_size, out_size):
        out_size = tf.cast(out_size, tf.int32)
        i = tf.range(out_size)
        denom = tf.maximum(out_size - 1, 1)
        # round(i * (in-1) / (out-1)) in exact integer arithmetic (half up).
        return (2 * i * (in_size - 1) + denom) // (2 * denom)

    rows = indices(shape[1], size_hw[0])
    cols = indices(shape[2], size_hw[1])
    return tf.gather(tf.gather(labels, rows, axis=1), cols, axis=2)


def _global_sum(value):
    """Sum of `value` over the replicas of the current tf.distribute replica context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


def segmentation_cross_entropy(labels, logits, ignore_label=IGNORE_LABEL, class_weights=None):
    """Mean softmax cross-entropy over the non-ignored pixels, labels reduced to the logits.

    With `class_weights` w, pixel i contributes w[y_i] * loss_i and the divisor
    stays the number of non-ignored pixels N (sum_i w[y_i] loss_i / N), so the
    gradient-accumulation and tf.distribute arithmetic of the module docstring
    is unchanged (PyTorch's weighted mean divides by sum_i w[y_i] instead; with
    `custom.class_weights("inverse_frequency")` the pixel-weighted mean weight
    of the training set is 1, so the scale of the loss is kept).

    Args:
      labels: int/float [B, H, W] (or [B, H, W, 1]) class ids in [0, C) or
        `ignore_label`, at input resolution (or already at logit resolution).
      logits: float [B, h, w, C] (any float dtype; computed in float32).
      ignore_label: label value that contributes nothing (255).
      class_weights: None, or C floats >= 0: the weight of each class's pixels.

    Returns:
      float32 scalar. 0 (with zero gradients) when every pixel is ignored.
      Inside a `tf.distribute` replica context the divisor is the valid-pixel
      count of the global batch (see the module docstring).

    Raises:
      InvalidArgumentError at run time when a label is outside [0, C) and is not
      `ignore_label` (never silently clipped).

    Example:
        >>> logits = tf.zeros([1, 41, 41, 21])
        >>> float(segmentation_cross_entropy(tf.zeros([1, 321, 321]), logits))  # log(21)
        3.04452...
    """
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 4:
        raise ValueError(f"logits must be [B, h, w, C]. Received: shape={logits.shape}")
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    labels = reduce_labels(labels, (tf.shape(logits)[1], tf.shape(logits)[2]))
    valid = tf.not_equal(labels, ignore_label)
    in_range = tf.logical_and(labels >= 0, labels < num_classes)
    check = tf.debugging.assert_equal(
        tf.logical_or(in_range, tf.logical_not(valid)), True,
        message=(f"Labels must be class ids in [0, num_classes) or {ignore_label} (ignore); "
                 "found another value (num_classes is the logits' last dimension)"))
    with tf.control_dependencies([check]):
        safe = tf.where(valid, labels, tf.zeros_like(labels))
    pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    weights = tf.cast(valid, tf.float32)
    count = _global_sum(tf.reduce_sum(weights))
    if class_weights is not None:
        class_weights = tf.constant(check_class_weights(class_weights, logits.shape[-1]),
                                    tf.float32)
        # Ignored pixels keep weight 0 (`safe` points them at class 0, `valid` zeroes them).
        weights = weights * tf.gather(class_weights, safe)
    total = tf.reduce_sum(pixel_loss * weights)
    return tf.math.divide_no_nan(total, count)



def check_class_weights(class_weights, num_classes=None):
    """Class weights as a tuple of C floats >= 0 (ValueError naming the value otherwise).

    Args:
      class_weights: a sequence of numbers.
      num_classes: the expected length C (None: not checked).
    """
    try:
        values = tuple(float(w) for w in class_weights)
    except (TypeError, ValueError):
        raise ValueError(f"class_weights must be a sequence of numbers. "
                         f"Received: class_weights={class_weights!r}") from None
    if (not values or any(not (w >= 0) or w == float("inf") for w in values)
            or (num_classes is not None and len(values) != num_classes)):
        want = f"{num_classes} " if num_classes is not None else ""
        raise ValueError(f"class_weights must be {want}finite numbers >= 0, one per class. "
                         f"Received: class_weights={list(class_weights)!r}")
    return values


def valid_pixel_count(labels, logits, ignore_label=IGNORE_LABEL, across_replicas=True):
    """The divisor of `segmentation_cross_entropy`: non-ignored pixels on the logit grid.

    Gradient accumulation (`deeplab_keras.training.accumulation`) weights each
    micro-batch's mean loss by its share of this count, so that the accumulated
    gradient is that of the mean over the valid pixels of the whole batch.

    Args:
      labels: int [B, H, W] (or [B, H, W, 1]) at input resolution.
      logits: float [B, h, w, C] (only its shape is read).
      ignore_label: the ignored label value.
      across_replicas: sum over the replicas inside a `tf.distribute` replica
        context (as the loss's divisor is); False: this replica's count.

    Returns:
      float32 scalar.
    """
    shape = tf.shape(logits)
    labels = reduce_labels(labels, (shape[1], shape[2]))
    count = tf.reduce_sum(tf.cast(tf.not_equal(labels, ignore_label), tf.float32))
    return _global_sum(count) if across_replicas else count

@keras.saving.register_keras_serializable(package="deeplab_keras")
class SegmentationCrossEntropy(keras.losses.Loss):
    """Keras loss wrapper of `segmentation_cross_entropy` for `model.compile`.

    `y_true` is the label map at input resolution [B, H, W], `y_pred` the logits
    [B, ceil(H/8), ceil(W/8), C]; the returned value is already the scalar mean
    over valid pixels, so Keras' reduction leaves it unchanged. For MSC models with
    dict outputs, give one instance per output key: each reduces the labels to its
    own output's size.

    Args:
      ignore_label: the ignored label value (255).
      class_weights: None, or C floats >= 0 (see `segmentation_cross_entropy`).
      name: loss name.

    Example:
        >>> model.compile(optimizer, loss=SegmentationCrossEntropy())
    """

    def __init__(self, ignore_label=IGNORE_LABEL, class_weights=None,
                 name="segmentation_cross_entropy", **kwargs):
        if isinstance(ignore_label, bool) or not isinstance(ignore_label, int):
            raise ValueError(f"ignore_label must be an int. Received: ignore_label={ignore_label!r}")
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
        self.ignore_label = ignore_label
        self.class_weights = (None if class_weights is None
                              else check_class_weights(class_weights))

    def call(self, y_true, y_pred):
        return segmentation_cross_entropy(y_true, y_pred, self.ignore_label, self.class_weights)

    def get_config(self):
        return {"ignore_label": self.ignore_label, "name": self.name,
                "class_weights": None if self.class_weights is None
                else list(self.class_weights)}
