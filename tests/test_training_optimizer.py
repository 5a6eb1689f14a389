"""Schedules at chosen steps; DeepLabSGD: 10x on the classifier, L2 on kernels only, state round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.models import build_model, classifier_layers
from deeplab_keras.training import callbacks as cb
from deeplab_keras.training.config import get_preset
from deeplab_keras.training.optimizer import DeepLabSGD, kernel_paths, make_optimizer
from deeplab_keras.training.schedules import PolyDecay, StepDecay, make_schedule


class TestSchedules:
    def test_v1_step_schedule(self):
        s = make_schedule(get_preset("deeplab-v1-largefov"))
        got = [float(s(i)) for i in (0, 1, 1999, 2000, 3999, 4000, 5999)]
        np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)

    def test_v2_poly_schedule(self):
        s = make_schedule(get_preset("deeplab-v2-resnet101"))
        # 2.5e-4 * (1 - it/20000) ** 0.9; 0.5 ** 0.9 = 0.5358867, 0.25 ** 0.9 = 0.2871746
        got = [float(s(i)) for i in (0, 10000, 15000, 20000, 25000)]
        np.testing.assert_allclose(got, [2.5e-4, 1.3397168e-4, 7.179365e-5, 0.0, 0.0],
                                   rtol=1e-5, atol=1e-12)

    def test_v2_vgg_presets_use_poly(self):
        for name in ("deeplab-v2-vgg16-largefov", "deeplab-v2-vgg16-aspp-s", "deeplab-v2-vgg16-aspp-l"):
            s = make_schedule(get_preset(name))
            assert isinstance(s, PolyDecay) and s.power == 0.9 and s.max_steps == 20000

    def test_optimizer_reads_schedule_at_its_iteration(self):
        opt = keras.optimizers.SGD(StepDecay(1.0, step_size=2, gamma=0.5))
        v = keras.Variable(np.zeros(3, np.float32))
        seen = []
        for _ in range(5):
            seen.append(float(opt.learning_rate))
            opt.apply_gradients([(tf.ones(3), v)])
        assert seen == [1.0, 1.0, 0.5, 0.5, 0.25]

    @pytest.mark.parametrize("bad", [dict(base_lr=0, step_size=1), dict(base_lr=1, step_size=0),
                                     dict(base_lr=1, step_size=1.5)])
    def test_bad_arguments(self, bad):
        with pytest.raises(ValueError, match="Received"):
            StepDecay(**bad)


def _tiny_deeplab():
    model = build_model("vgg16_largefov", num_classes=3, width_multiplier=0.0625, dropout=0.0)
    model(np.zeros((1, 33, 33, 3), np.float32))
    return model


def _grads(model, x, y):
    from deeplab_keras.training.losses import segmentation_cross_entropy

    with tf.GradientTape() as tape:
        loss = segmentation_cross_entropy(y, model(x, training=True))
    return tape.gradient(loss, model.trainable_variables)


class TestDeepLabSGD:
    def test_classifier_gets_10x_learning_rate(self):
        """One SGD step: update / gradient is -lr for the backbone, -10 lr for the classifier."""
        keras.utils.set_random_seed(0)
        model = _tiny_deeplab()
        lr = 1e-2
        opt = make_optimizer(model, lr, momentum=0.9, weight_decay=0.0)
        x = np.random.default_rng(0).normal(size=(2, 33, 33, 3)).astype(np.float32) * 50
        y = np.random.default_rng(1).integers(0, 3, (2, 33, 33)).astype(np.int32)
        grads = _grads(model, x, y)
        before = [v.numpy().copy() for v in model.trainable_variables]
        opt.apply_gradients(zip(grads, model.trainable_variables))
        classifier = {v.path for layer in classifier_layers(model) for v in layer.trainable_variables}
        assert classifier == {"fc8/kernel", "fc8/bias"}
        ratios = {}
        for v, g, b in zip(model.trainable_variables, grads, before):
            g = g.numpy()
            mask = np.abs(g) > 1e-6
            assert mask.any(), v.path
            ratios[v.path] = np.median((v.numpy() - b)[mask] / g[mask])
        for path, ratio in ratios.items():
            expected = -10 * lr if path in classifier else -lr
            assert ratio == pytest.approx(expected, rel=1e-3), path

    def test_weight_decay_on_kernels_not_biases_or_batchnorm(self):
        inp = keras.Input((6, 6, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.Dense(2, name="dense")(x)
        model = keras.Model(inp, x)
        for v in model.trainable_variables:  # non-zero values everywhere
            v.assign(np.random.default_rng(0).normal(size=v.shape).astype(np.float32) + 2.0)
        assert kernel_paths(model) == ["conv/kernel", "dense/kernel"]
        lr, wd = 0.1, 0.01
        opt = DeepLabSGD(lr, momentum=0.9, weight_decay_rate=wd, decay_paths=kernel_paths(model))
        before = {v.path: v.numpy().copy() for v in model.trainable_variables}
        zeros = [tf.zeros_like(v) for v in model.trainable_variables]
        opt.apply_gradients(zip(zeros, model.trainable_variables))
        for v in model.trainable_variables:
            if v.path.endswith("kernel"):
                np.testing.assert_allclose(v.numpy(), before[v.path] * (1 - lr * wd), rtol=1e-6)
            else:  # conv/bias, dense/bias, bn/gamma, bn/beta
                np.testing.assert_array_equal(v.numpy(), before[v.path])

    def test_caffe_momentum_update(self):
        """v = m v - lr (g + wd w); w += v  over two steps, with the 10x factor."""
        v = keras.Variable(np.array([1.0, -2.0], np.float32), name="w")
        opt = DeepLabSGD(0.1, momentum=0.9, weight_decay_rate=0.5, decay_paths=[v.path],
                         lr_multipliers={v.path: 10.0})
        w, vel = np.array([1.0, -2.0]), np.zeros(2)
        for g in ([1.0, 1.0], [0.5, -1.0]):
            opt.apply_gradients([(tf.constant(g, tf.float32), v)])
            vel = 0.9 * vel - 1.0 * (np.array(g) + 0.5 * w)
            w = w + vel
            np.testing.assert_allclose(v.numpy(), w, rtol=1e-6)

    def test_state_survives_checkpoint_round_trip(self, tmp_path):
        """Momentum and iteration count come back; the next step is identical."""
        keras.utils.set_random_seed(1)
        x = np.random.default_rng(2).normal(size=(2, 33, 33, 3)).astype(np.float32) * 50
        y = np.random.default_rng(3).integers(0, 3, (2, 33, 33)).astype(np.int32)

        def compiled():
            model = _tiny_deeplab()
            opt = make_optimizer(model, PolyDecay(1e-2, 100), weight_decay=5e-4)
            from deeplab_keras.training.losses import SegmentationCrossEntropy

            model.compile(opt, SegmentationCrossEntropy(), jit_compile=False)
            opt.build(model.trainable_variables)
            return model

        a = compiled()
        for _ in range(3):
            a.train_on_batch(x, y)
        path = cb.save_checkpoint(a, tmp_path, 3)
        b = compiled()
        assert cb.restore_checkpoint(b, path) == 3
        for va, vb in zip(a.optimizer.variables, b.optimizer.variables):
            np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))
        a.train_on_batch(x, y)
        b.train_on_batch(x, y)
        for va, vb in zip(a.weights, b.weights):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)

    def test_unknown_path_is_refused_at_build(self):
        v = keras.Variable(np.zeros(2, np.float32), name="w")
        opt = DeepLabSGD(0.1, lr_multipliers={"nope/kernel": 10.0})
        with pytest.raises(ValueError, match="nope/kernel"):
            opt.build([v])

    def test_keras_decoupled_weight_decay_is_refused(self):
        with pytest.raises(ValueError, match="weight_decay"):
            DeepLabSGD(0.1, weight_decay=1e-4)


def test_jit_compiled_step_gives_the_same_update():
    """`jit_compile=True` (XLA on the CPU here) takes the same SGD step as the graph
    step: after 2 steps every weight is within 1e-3 x the largest weight change
    (XLA fuses and orders float32 sums differently)."""
    from deeplab_keras.training import apply_overrides, get_preset
    from deeplab_keras.training.trainer import build_networks, compile_for_training

    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (2, 33, 33, 3)).astype("float32")
    y = rng.integers(0, 6, (2, 33, 33)).astype("int32")
    y[0, :10] = 255
    weights = {}
    for jit in (False, True):
        config = apply_overrides(get_preset("builtin"), dict(
            width_multiplier=0.0625, crop_size=33, batch_size=2, jit_compile=jit))
        keras.utils.set_random_seed(2)
        _, model = build_networks(config, backbone_weights=None)
        compile_for_training(config, model)
        assert model.jit_compile is jit
        start = [w.numpy() for w in model.trainable_weights]
        for _ in range(2):
            model.train_on_batch(x, y)
        weights[jit] = [w.numpy() for w in model.trainable_weights]
    change = max(float(np.max(np.abs(w - w0))) for w, w0 in zip(weights[False], start))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights[False], weights[True]))
    assert change > 1e-4
    assert diff <= 1e-3 * change, (diff, change)
