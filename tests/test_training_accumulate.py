"""Gradient accumulation: N micro-batches give the update of one batch N times larger.

The loss is the mean over the valid pixels of the whole batch, so the labels put
very different numbers of ignored (255) pixels into the micro-batches: an
unweighted mean of micro-batch means (what Keras' `gradient_accumulation_steps`
computes) put the weights 0.4 x the largest weight change away from the big
batch's (measured, 2 x 5), the valid-pixel weighting 1e-7 x.
"""

import keras
import numpy as np
import pytest

from deeplab_keras.training import apply_overrides, get_preset
from deeplab_keras.training.accumulation import install_accumulation
from deeplab_keras.training.trainer import build_networks, compile_for_training

CROP = 33
BATCH = 10


def _batch(num_classes):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (BATCH, CROP, CROP, 3)).astype("float32")
    y = rng.integers(0, num_classes, (BATCH, CROP, CROP)).astype("int32")
    y[:2] = 255           # with 5 x 2, micro-batch 1 has nothing to learn from
    y[2, :20] = 255       # unequal valid-pixel counts between the micro-batches
    y[7, :, :5] = 255
    return x, y


def _trained(accumulate, msc, steps=2):
    """(initial weights, weights after `steps` updates, losses) on one fixed batch."""
    config = apply_overrides(get_preset("builtin"), dict(
        width_multiplier=0.0625, crop_size=CROP, batch_size=BATCH, accumulate=accumulate,
        msc_training=msc, init="keras", backbone_weights=None))
    keras.utils.set_random_seed(1)
    _, model = build_networks(config)
    keys, _ = compile_for_training(config, model)
    x, y = _batch(config.num_classes)
    labels = {k: y for k in keys} if keys else y
    start = [w.numpy() for w in model.trainable_weights]
    losses = [model.train_on_batch(x, labels) for _ in range(steps)]
    assert int(model.optimizer.iterations.numpy()) == steps  # one update per batch
    return start, [w.numpy() for w in model.trainable_weights], losses


@pytest.mark.parametrize("accumulate, msc", [(2, False), (5, False), (2, True)],
                         ids=["2x5", "5x2-one-micro-batch-all-ignored", "2x5-msc-4-losses"])
def test_accumulated_update_equals_the_big_batch(accumulate, msc):
    """Tolerance: after 2 SGD steps (momentum, 10x classifier, weight decay) every
    weight is within 1e-5 x the largest weight change of the batch-10 run (float32
    summation order; measured 1e-7 single-output, 4e-7 MSC)."""
    start, big, big_losses = _trained(1, msc)
    start_acc, acc, acc_losses = _trained(accumulate, msc)
    for a, b in zip(start, start_acc):
        np.testing.assert_array_equal(a, b)  # same initial weights
    change = max(float(np.max(np.abs(w - w0))) for w, w0 in zip(big, start))
    assert change > 1e-4  # the step did something
    diff = max(float(np.max(np.abs(w - v))) for w, v in zip(big, acc))
    assert diff <= 1e-5 * change, (diff, change)
    # The logged loss is the same global mean (for MSC the sum of the 4 outputs' losses,
    # which Keras reports first, before the per-output ones).
    total = [float(v[0]) if isinstance(v, list) else float(v) for v in big_losses]
    np.testing.assert_allclose([float(v) for v in acc_losses], total, rtol=1e-5)

def test_accumulate_must_divide_the_batch():
    with pytest.raises(ValueError, match="accumulate=3, batch_size=10"):
        apply_overrides(get_preset("builtin"), dict(batch_size=10, accumulate=3))
    with pytest.raises(ValueError, match="accumulate=0"):
        apply_overrides(get_preset("builtin"), dict(accumulate=0))
    with pytest.raises(ValueError, match="accumulate=True"):
        install_accumulation(keras.Sequential(), None, True)
