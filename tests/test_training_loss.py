"""The stride-8 softmax loss: nearest label reduction, exact 255 ignore, MSC dict outputs."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.training.losses import (SegmentationCrossEntropy, reduce_labels,
                                           segmentation_cross_entropy)


def _numpy_ce(labels, logits, ignore=255):
    """Reference: mean over non-ignored pixels of -log softmax(logits)[label]."""
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    valid = labels != ignore
    picked = np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum() / max(valid.sum(), 1)


class TestReduceLabels:
    def test_321_to_41_samples_every_8th_pixel(self):
        labels = np.arange(321 * 321, dtype=np.int32).reshape(1, 321, 321) % 251
        out = reduce_labels(labels, (41, 41)).numpy()
        np.testing.assert_array_equal(out, labels[:, ::8, ::8])

    def test_non_square_and_msc_sizes(self):
        labels = np.random.default_rng(0).integers(0, 21, (2, 65, 97)).astype(np.int32)
        out = reduce_labels(labels, (9, 13)).numpy()  # ceil(65/8), ceil(97/8)
        np.testing.assert_array_equal(out, labels[:, ::8, ::8])
        # Scale 0.5 output of a 321 crop (161 px -> 21 logits): rows round(i * 16).
        big = np.random.default_rng(1).integers(0, 21, (1, 321, 321)).astype(np.int32)
        out = reduce_labels(big, (21, 21)).numpy()
        np.testing.assert_array_equal(out, big[:, ::16, ::16])

    def test_values_are_never_interpolated(self):
        labels = np.random.default_rng(2).choice([0, 3, 255], (1, 50, 70)).astype(np.int32)
        out = reduce_labels(labels, (11, 7)).numpy()
        assert set(np.unique(out)) <= {0, 3, 255}

    def test_rejects_bad_rank(self):
        with pytest.raises(ValueError, match="labels must be"):
            reduce_labels(np.zeros((4, 4), np.int32), (2, 2))


class TestLoss:
    def test_matches_numpy_reference_with_ignored_pixels(self):
        rng = np.random.default_rng(3)
        labels = rng.integers(0, 5, (2, 33, 41)).astype(np.int32)
        labels[rng.random(labels.shape) < 0.3] = 255
        logits = rng.normal(size=(2, 5, 6, 5)).astype(np.float32)
        expected = _numpy_ce(labels[:, ::8, ::8], logits)
        got = float(segmentation_cross_entropy(labels, logits))
        assert got == pytest.approx(expected, rel=1e-5)

    def test_ignored_pixels_change_nothing(self):
        """Relabelling ignored pixels' *logits* leaves the loss and every gradient unchanged."""
        rng = np.random.default_rng(4)
        labels = rng.integers(0, 4, (1, 9, 9)).astype(np.int32)
        labels[0, :4] = 255
        logits = rng.normal(size=(1, 9, 9, 4)).astype(np.float32)
        other = logits.copy()
        other[0, :4] = rng.normal(size=(4, 9, 4)) * 100  # wild values where ignored
        a, b = tf.Variable(logits), tf.Variable(other)
        with tf.GradientTape(persistent=True) as tape:
            la = segmentation_cross_entropy(labels, a)
            lb = segmentation_cross_entropy(labels, b)
        assert float(la) == pytest.approx(float(lb), rel=1e-6)
        ga, gb = tape.gradient(la, a).numpy(), tape.gradient(lb, b).numpy()
        assert np.all(ga[0, :4] == 0) and np.all(gb[0, :4] == 0)
        np.testing.assert_allclose(ga[0, 4:], gb[0, 4:], rtol=1e-5, atol=1e-8)

    def test_all_ignore_gives_zero_loss_and_zero_gradients(self):
        labels = np.full((2, 17, 17), 255, np.int32)
        logits = tf.Variable(np.random.default_rng(5).normal(size=(2, 3, 3, 21)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = segmentation_cross_entropy(labels, logits)
        grad = tape.gradient(loss, logits)
        assert float(loss) == 0.0
        assert np.all(grad.numpy() == 0.0)

    def test_label_outside_classes_is_an_error(self):
        labels = np.full((1, 9, 9), 7, np.int32)
        with pytest.raises(tf.errors.InvalidArgumentError, match="Labels must be class ids"):
            segmentation_cross_entropy(labels, tf.zeros([1, 2, 2, 5]))

    def test_keras_loss_msc_dict(self):
        """One loss per MSC output, labels reduced to each output's own size."""
        import keras

        rng = np.random.default_rng(6)
        labels = rng.integers(0, 3, (2, 65, 65)).astype(np.int32)
        outs = {"fused": rng.normal(size=(2, 9, 9, 3)), "scale_0.50": rng.normal(size=(2, 5, 5, 3))}
        outs = {k: v.astype(np.float32) for k, v in outs.items()}
        inp = {k: keras.Input(v.shape[1:], name=k) for k, v in outs.items()}
        model = keras.Model(inp, {k: keras.layers.Identity(name=k + "_id")(t) for k, t in inp.items()})
        model.compile(loss={k: SegmentationCrossEntropy() for k in outs})
        total = model.evaluate(outs, {k: labels for k in outs}, verbose=0, return_dict=True)
        expected = (_numpy_ce(labels[:, ::8, ::8], outs["fused"])
                    + _numpy_ce(labels[:, ::16, ::16], outs["scale_0.50"]))
        assert total["loss"] == pytest.approx(expected, rel=1e-5)
