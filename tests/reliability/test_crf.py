"""Reliability cases of deeplab_keras.crf (issue 8): odd images and logits, bad
configurations, numerical edge cases, and that nothing is lost or modified."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.crf import DenseCRF, dense_crf, portable_ops
from deeplab_keras.crf.testing import FLOAT32_EPS, rounding_bound


def _inputs(h=8, w=10, c=3, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randint(0, 256, (1, h, w, 3)).astype(np.uint8), rs.normal(0, 1, (1, h, w, c)).astype(np.float32)


def _graph_crf():
    return tf.function(
        lambda images, logits: dense_crf(images, logits, iterations=2),
        input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8),
                         tf.TensorSpec([None, None, None, None], tf.float32)])


class TestImages:
    def test_height_width_mismatch_names_shapes(self):
        image, _ = _inputs(8, 10)
        _, logits = _inputs(8, 12)
        with pytest.raises(ValueError, match=r"same width.*images.shape=\(1, 8, 10, 3\).*logits.shape=\(1, 8, 12, 3\)"):
            dense_crf(image, logits)

    def test_logits_at_output_stride_not_image_resolution(self):
        image, _ = _inputs(64, 80)
        _, logits = _inputs(8, 10)  # forgot resize_logits
        with pytest.raises(ValueError, match=r"image resolution.*\(1, 64, 80, 3\).*\(1, 8, 10, 3\)"):
            dense_crf(image, logits)

    def test_batch_mismatch(self):
        image, logits = _inputs()
        with pytest.raises(ValueError, match="same batch"):
            dense_crf(np.concatenate([image, image]), logits)

    @pytest.mark.parametrize("channels", [1, 4])
    def test_non_rgb_image(self, channels):
        _, logits = _inputs()
        with pytest.raises(ValueError, match=rf"3 \(RGB\) channels.*images.shape=\(1, 8, 10, {channels}\)"):
            dense_crf(np.zeros((1, 8, 10, channels), np.uint8), logits)

    def test_missing_batch_axis(self):
        image, logits = _inputs()
        with pytest.raises(ValueError, match=r"\[B, H, W, 3\].*images.shape=\(8, 10, 3\)"):
            dense_crf(image[0], logits[0])

    def test_bool_image_rejected(self):
        image, logits = _inputs()
        with pytest.raises(ValueError, match="images.dtype=bool"):
            dense_crf(image > 100, logits)

    def test_float_image_outside_0_255_is_clipped(self):
        image, logits = _inputs()
        wild = image.astype(np.float32) * 2.0 - 100.0
        # The same float32 image after the clip, so the same computation.
        np.testing.assert_allclose(dense_crf(wild, logits).numpy(),
                                   dense_crf(np.clip(wild, 0, 255), logits).numpy(), atol=rounding_bound(logits, 10))

    def test_graph_mode_mismatch_is_an_error_at_run_time(self):
        image, _ = _inputs(8, 10)
        _, logits = _inputs(8, 11)
        with pytest.raises(tf.errors.InvalidArgumentError, match="same batch, height and width"):
            _graph_crf()(image, logits)

    def test_graph_mode_non_rgb_is_an_error_at_run_time(self):
        _, logits = _inputs()
        with pytest.raises(tf.errors.InvalidArgumentError, match="3 \\(RGB\\) channels"):
            _graph_crf()(np.zeros((1, 8, 10, 4), np.uint8), logits)

    def test_empty_image_gives_empty_output(self):
        out = dense_crf(np.zeros((1, 0, 10, 3), np.uint8), np.zeros((1, 0, 10, 3), np.float32))
        assert out.shape == (1, 0, 10, 3)

    @pytest.mark.parametrize("shape", [(1, 1), (1, 37), (29, 1)])
    def test_degenerate_sizes(self, shape):
        image, logits = _inputs(*shape)
        q = dense_crf(image, logits).numpy()
        assert np.all(np.isfinite(q))
        np.testing.assert_allclose(q.sum(-1), 1.0, atol=(2 * q.shape[-1] + 4) * FLOAT32_EPS)  # a softmax's sum

    def test_constant_image(self):
        _, logits = _inputs(16, 16)
        q = dense_crf(np.full((1, 16, 16, 3), 128, np.uint8), logits).numpy()
        assert np.all(np.isfinite(q))
        np.testing.assert_allclose(q.sum(-1), 1.0, atol=(2 * q.shape[-1] + 4) * FLOAT32_EPS)  # a softmax's sum


class TestNumbers:
    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_logits_eager(self, bad):
        image, logits = _inputs()
        logits[0, 3, 4, 1] = bad
        with pytest.raises(ValueError, match="contain 1 NaN or Inf"):
            dense_crf(image, logits)

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_logits_graph(self, bad):
        image, logits = _inputs()
        logits[0, 3, 4, 1] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
            _graph_crf()(image, logits)

    def test_non_finite_logits_in_converted_tflite_give_nan(self):
        # Converters drop tf.debugging checks: a NaN logit makes the whole
        # image's probabilities NaN (detectable), never a plausible labelling.
        from ai_edge_litert.interpreter import Interpreter

        image, logits = _inputs()

        @tf.function(input_signature=[tf.TensorSpec(image.shape, tf.uint8), tf.TensorSpec(logits.shape, tf.float32)])
        def serve(images, logits):
            return dense_crf(images, logits, iterations=2)

        with portable_ops():
            converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], serve)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            interpreter = Interpreter(model_content=converter.convert())
        interpreter.allocate_tensors()
        logits[0, 3, 4, 1] = np.nan
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], image if detail["dtype"] == np.uint8 else logits)
        interpreter.invoke()
        assert np.all(np.isnan(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])))

    def test_huge_finite_logits(self):
        image, logits = _inputs()
        q = dense_crf(image, logits * 1e6).numpy()
        assert np.all(np.isfinite(q))
        np.testing.assert_array_equal(q.argmax(-1), logits.argmax(-1))

    def test_float16_logits_give_float32(self):
        image, logits = _inputs()
        out = dense_crf(image, logits.astype(np.float16))
        assert out.dtype == tf.float32
        widened = logits.astype(np.float16).astype(np.float32)  # what the CRF casts to: the same computation
        np.testing.assert_allclose(out.numpy(), dense_crf(image, widened).numpy(), atol=rounding_bound(widened, 10))

    def test_integer_logits_rejected(self):
        image, logits = _inputs()
        with pytest.raises(ValueError, match="logits.dtype=int32"):
            dense_crf(image, logits.astype(np.int32))

    def test_single_class_rejected(self):
        image, _ = _inputs()
        with pytest.raises(ValueError, match=r"C >= 2.*logits.shape=\(1, 8, 10, 1\)"):
            dense_crf(image, np.zeros((1, 8, 10, 1), np.float32))

    def test_sigmas_too_small_for_the_hash(self):
        image, logits = _inputs(64, 64)
        with pytest.raises(ValueError, match="too small.*bilateral_spatial_sigma=0.001, bilateral_color_sigma=0.001"):
            dense_crf(image, logits, bilateral_spatial_sigma=0.001, bilateral_color_sigma=0.001)


class TestConfigs:
    @pytest.mark.parametrize("name", ["spatial_sigma", "bilateral_spatial_sigma", "bilateral_color_sigma"])
    @pytest.mark.parametrize("value", [0.0, -3.0, float("nan"), float("inf")])
    def test_bad_sigma(self, name, value):
        image, logits = _inputs()
        with pytest.raises(ValueError, match=rf"{name}={value}"):
            dense_crf(image, logits, **{name: value})
        with pytest.raises(ValueError, match=rf"{name}={value}"):
            DenseCRF(**{name: value})

    @pytest.mark.parametrize("value", [-1, 2.5, True, "10", None])
    def test_bad_iterations(self, value):
        with pytest.raises(ValueError, match=rf"iterations={value!r}"):
            DenseCRF(iterations=value)

    @pytest.mark.parametrize("name", ["spatial_weight", "bilateral_weight"])
    @pytest.mark.parametrize("value", [-1.0, float("nan")])
    def test_bad_weight(self, name, value):
        with pytest.raises(ValueError, match=rf"{name}={value}"):
            DenseCRF(**{name: value})

    def test_bad_implementation(self):
        with pytest.raises(ValueError, match="implementation='xla'"):
            DenseCRF(implementation="xla")

    def test_from_config_validates(self):
        config = DenseCRF().get_config()
        config["bilateral_color_sigma"] = 0
        with pytest.raises(ValueError, match="bilateral_color_sigma=0"):
            DenseCRF.from_config(config)


class TestNothingLost:
    def test_inputs_not_modified(self):
        image, logits = _inputs()
        image0, logits0 = image.copy(), logits.copy()
        dense_crf(image, logits)
        np.testing.assert_array_equal(image, image0)
        np.testing.assert_array_equal(logits, logits0)

    def test_layer_has_no_state_to_lose(self):
        layer = DenseCRF()
        image, logits = _inputs()
        layer(image, logits)
        assert layer.weights == [] and layer.non_trainable_weights == []

    def test_config_keeps_every_argument(self):
        kwargs = dict(iterations=3, spatial_weight=1.5, spatial_sigma=2.0, bilateral_weight=6.0,
                      bilateral_spatial_sigma=30.0, bilateral_color_sigma=13.0, implementation="portable")
        config = DenseCRF(**kwargs).get_config()
        assert {k: config[k] for k in kwargs} == kwargs
