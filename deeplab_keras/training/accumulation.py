"""Gradient accumulation: the effective batch of the Caffe solvers on a small device.

Caffe's `iter_size: N` (the official DeepLab v2 ResNet-101 solver: batch 1 x
iter_size 10) sums the gradients of N forward/backward passes before one SGD
update. Here `TrainConfig.batch_size` stays the effective (global) batch of the
recipe and `accumulate=N` splits every batch into N micro-batches of
batch_size / N images, one forward/backward pass each, then one optimizer step:
the learning-rate schedule, momentum, weight decay and the step counter all see
one step per effective batch.

The DeepLab loss is the mean over the valid (non-255) pixels of the whole
batch. A micro-batch's loss is the mean over its own valid pixels, so each is
weighted by its share of the batch's valid pixels,

    loss = sum_i loss_i * count_i / sum_j count_j     (per output, for MSC)

which makes the summed gradient exactly the gradient of one pass over the whole
batch, however the ignored pixels fall between micro-batches (an unweighted
mean of micro-batch means, as `keras.optimizers.Optimizer(
gradient_accumulation_steps=N)` computes, is not). What does differ from the
big batch: BatchNorm layers that are trained see micro-batch statistics (as in
Caffe); DeepLab v2 trains ResNet-101 with frozen BN, where nothing differs.

The micro-batches are a Python loop in the traced step (not a `tf.while_loop`:
under MirroredStrategy the loss's cross-replica pixel count cannot sit inside a
loop body), chained by control dependencies so that one micro-batch's
activations are freed before the next one runs.

Example:
    >>> from deeplab_keras.training.losses import SegmentationCrossEntropy
    >>> model.compile(optimizer, loss=SegmentationCrossEntropy())
    >>> install_accumulation(model, model.loss, steps=2)   # batch 10 = 2 x 5
    >>> images, labels = np.zeros((10, 65, 65, 3), "float32"), np.zeros((10, 65, 65), "int32")
    >>> history = model.fit(images, labels, batch_size=10, epochs=1, verbose=0)
"""

import keras
import tensorflow as tf

from deeplab_keras.training.losses import _global_sum, valid_pixel_count


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"accumulate must be an integer >= 1. Received: accumulate={steps!r}")


def accumulating_train_step(model, loss, steps):
    """A `train_step(data)` for `model` that accumulates `steps` micro-batches.

    Args:
      model: the compiled training model (its optimizer is used; a
        `LossScaleOptimizer` scales each micro-batch's loss and unscales once).
      loss: the loss the model was compiled with: one callable
        `(labels, logits) -> scalar mean over valid pixels`, or a dict of them
        keyed like the model's dict outputs (MSC).
      steps: micro-batches per optimizer step (>= 1). The per-replica batch must
        be a multiple of it.

    Returns:
      `train_step(data) -> {"loss": running mean of the step losses}`, where
      data is (images [b, H, W, 3], labels [b, H, W] or a dict of them).
    """
    _check_steps(steps)
    keyed = isinstance(loss, dict)

    def train_step(data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch = x.shape[0]
        if batch is None:
            raise ValueError("Gradient accumulation needs a static batch size (batch the dataset "
                             "with drop_remainder=True).")
        if batch % steps:
            raise ValueError(f"The per-replica batch ({batch}) must be a multiple of accumulate "
                             f"({steps}). Received: accumulate={steps}")
        micro = batch // steps
        variables = model.trainable_variables
        sums = [tf.zeros(v.shape, v.dtype) for v in variables]
        total = tf.constant(0.0, tf.float32)
        for i in range(steps):
            # Everything of micro-batch i after micro-batch i-1's gradients: one at a time
            # (memory), and every replica launches its all-reduces in the same order.
            with tf.control_dependencies(sums + [total]):
                xi = tf.identity(x[i * micro:(i + 1) * micro])
                yi = tf.nest.map_structure(lambda t: tf.identity(t[i * micro:(i + 1) * micro]), y)
                y_all = tf.nest.map_structure(tf.identity, y)
            with tf.GradientTape() as tape:
                pred = model(xi, training=True)
                micro_loss = tf.constant(0.0, tf.float32)
                for key in (sorted(loss) if keyed else [None]):
                    fn = loss[key] if keyed else loss
                    logits = pred[key] if keyed else pred
                    labels_i = yi[key] if keyed else yi
                    labels_all = y_all[key] if keyed else y_all
                    with tf.control_dependencies([micro_loss]):  # after the previous output's
                        # One all-reduce for (this micro-batch's, the batch's) valid pixels.
                        counts = _global_sum(tf.stack([
                            valid_pixel_count(labels_i, logits, across_replicas=False),
                            valid_pixel_count(labels_all, logits, across_replicas=False)]))
                    with tf.control_dependencies([counts]):  # then the loss's own all-reduce
                        labels_i = tf.identity(labels_i)
                    share = tf.math.divide_no_nan(counts[0], counts[1])
                    micro_loss += tf.cast(fn(labels_i, logits), tf.float32) * share
                scaled = model.optimizer.scale_loss(micro_loss)
            grads = tape.gradient(scaled, variables)
            sums = [s if g is None else s + tf.cast(g, s.dtype) for s, g in zip(sums, grads)]
            total += micro_loss
        model.optimizer.apply_gradients(zip(sums, variables))
        # As Keras' own train_step logs it: its cross-replica reduction of the logs
        # expects values scaled by 1/replicas (our loss is already the global mean).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        model._loss_tracker.update_state(total * float(replicas), sample_weight=batch)
        return {"loss": model._loss_tracker.result()}

    return train_step


def install_accumulation(model, loss, steps):
    """Make `model.fit` / `train_on_batch` accumulate `steps` micro-batches per update.

    `steps == 1` leaves Keras' own `train_step` in place. Call after
    `model.compile` (and before the first `fit`).
    """
    _check_steps(steps)
    if steps == 1:
        return model
    if getattr(model, "losses", None):
        raise ValueError("Gradient accumulation does not handle models with added losses "
                         f"(model.losses: {len(model.losses)}); DeepLab applies weight decay "
                         "in the optimizer instead.")
    model.train_step = accumulating_train_step(model, loss, steps)
    model.make_train_function(force=True)
    return model
