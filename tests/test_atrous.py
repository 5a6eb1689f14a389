"""AtrousConv2D: the native dilated lowering equals Keras's space-to-batch form."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.models import atrous, build_model
from deeplab_keras.models.atrous import AtrousConv2D, atrous_lowering


def _forward_and_grads(model, x, lowering):
    x = tf.constant(x)
    with atrous_lowering(lowering), tf.GradientTape() as tape:  # eager: no tracing cost
        tape.watch(x)
        y = model(x, training=False)
        loss = tf.reduce_sum(tf.square(y))
    grads = tape.gradient(loss, [x] + model.trainable_variables)
    return y.numpy(), [g.numpy() for g in grads]


def _assert_close(a, b, name):
    scale = max(1e-12, float(np.abs(b).max()))
    np.testing.assert_allclose(a / scale, b / scale, atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.skipif(not atrous.native_dilated_conv_supported(),
                    reason="this TF build has no native dilated conv backprop")
@pytest.mark.parametrize("name,size", [("vgg16_largefov", 49), ("vgg16_aspp_l", 41),
                                       ("resnet101_aspp", 37)])
def test_native_lowering_equals_space_to_batch_forward_and_gradients(name, size):
    model = build_model(name, num_classes=5, width_multiplier=0.0625, dropout=0.0)
    x = np.random.default_rng(0).normal(0, 20, (2, size, size, 3)).astype("float32")
    y_native, g_native = _forward_and_grads(model, x, "native")
    y_s2b, g_s2b = _forward_and_grads(model, x, "space_to_batch")
    assert y_native.shape == y_s2b.shape
    _assert_close(y_native, y_s2b, "logits")
    names = ["input"] + [v.path for v in model.trainable_variables]
    assert len(g_native) == len(g_s2b) == len(names)
    for name_v, a, b in zip(names, g_native, g_s2b):
        assert np.isfinite(a).all(), name_v
        _assert_close(a, b, name_v)


def test_layer_keeps_conv2d_weights_names_and_config():
    layer = AtrousConv2D(7, 3, padding="same", dilation_rate=4, name="fc6")
    layer.build((None, 9, 9, 3))
    assert isinstance(layer, tf.keras.layers.Layer)
    assert [v.path for v in layer.weights] == ["fc6/kernel", "fc6/bias"]
    assert layer.kernel.shape == (3, 3, 3, 7)
    config = layer.get_config()
    assert config["dilation_rate"] == (4, 4) and config["name"] == "fc6"
    clone = AtrousConv2D.from_config(config)
    clone.build((None, 9, 9, 3))
    clone.set_weights(layer.get_weights())
    x = np.random.default_rng(1).normal(size=(1, 9, 9, 3)).astype("float32")
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy(), atol=1e-6)


def test_dilated_conv_with_large_rate_on_small_map_matches_reference():
    """Rate 12 on a 5x5 map: every off-centre tap falls in the padding, so the
    conv reduces to its centre tap, a 1x1 conv."""
    layer = AtrousConv2D(4, 3, padding="same", dilation_rate=12, use_bias=False)
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 3)).astype("float32")
    for lowering in ("native", "space_to_batch") if atrous.native_dilated_conv_supported() \
            else ("space_to_batch",):
        with atrous_lowering(lowering):
            y = layer(x).numpy()
        expected = np.einsum("bhwc,cf->bhwf", x, layer.kernel.numpy()[1, 1])
        np.testing.assert_allclose(y, expected, atol=1e-5, err_msg=lowering)


def test_bad_lowering_is_refused_with_its_value(monkeypatch):
    with pytest.raises(ValueError, match="'im2col'"):
        atrous.set_atrous_lowering("im2col")
    monkeypatch.setattr(atrous, "_requested", None)
    monkeypatch.setenv(atrous.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="DEEPLAB_KERAS_ATROUS='fast'"):
        atrous.get_atrous_lowering()


@pytest.mark.parametrize("lowering,expect_s2b", [("native", False), ("space_to_batch", True)])
def test_traced_graph_has_space_to_batch_only_in_the_keras_form(lowering, expect_s2b):
    if lowering == "native" and not atrous.native_dilated_conv_supported():
        pytest.skip("this TF build has no native dilated conv backprop")
    layer = AtrousConv2D(4, 3, padding="same", dilation_rate=2)
    layer.build((None, None, None, 3))
    with atrous_lowering(lowering):
        graph = tf.function(layer).get_concrete_function(
            tf.TensorSpec([1, None, None, 3], tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    assert ("SpaceToBatchND" in ops) == expect_s2b, sorted(ops)
    assert "Conv2D" in ops
