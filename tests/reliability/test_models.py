"""Reliability cases of deeplab_keras.models (issue 8): odd inputs, bad paths and
configs, numerical edge cases, and that failures lose nothing."""

import h5py
import keras
import numpy as np
import pytest

from deeplab_keras.models import (
    ResizeLogits,
    build_model,
    classifier_layers,
    load_backbone_weights,
    resize_logits,
    wrap_msc,
)
from deeplab_keras.models.strides import logits_size

SMALL = 1 / 16


def _images(shape, seed=0, scale=50.0):
    return np.random.default_rng(seed).normal(0, scale, shape).astype("float32")


@pytest.fixture(scope="module")
def vgg():
    keras.utils.set_random_seed(0)
    return build_model("vgg16_largefov", width_multiplier=SMALL)


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    return build_model("resnet101_aspp", width_multiplier=SMALL)


@pytest.fixture(scope="module")
def vgg_notop_keras3(tmp_path_factory):
    """keras.applications.VGG16 without top, Keras 3 save_weights format."""
    keras.utils.set_random_seed(5)
    src = keras.applications.VGG16(weights=None, include_top=False)
    path = tmp_path_factory.mktemp("vgg3") / "vgg16_notop.weights.h5"
    src.save_weights(path)
    return path, src


class TestImages:
    @pytest.mark.parametrize("hw", [(1, 1), (2, 9), (7, 1)])
    def test_tiny_and_degenerate_sizes_follow_caffe_sizes(self, vgg, resnet, hw):
        for model, backbone in ((vgg, "vgg16"), (resnet, "resnet101")):
            out = model(_images((1, *hw, 3)))
            assert tuple(out.shape) == (1, *logits_size(backbone, hw), 21)
            assert np.isfinite(out.numpy()).all()

    def test_one_model_serves_different_sizes_and_batches(self, vgg):
        for shape in [(1, 40, 40, 3), (3, 17, 65, 3), (2, 64, 9, 3)]:
            out = vgg.predict(_images(shape), verbose=0)
            assert out.shape == (shape[0], *logits_size("vgg16", shape[1:3]), 21)

    def test_four_channel_image_is_rejected_naming_the_shape(self, vgg):
        with pytest.raises(ValueError, match=r"\(1, 20, 20, 4\)"):
            vgg(np.zeros((1, 20, 20, 4), "float32"))

    def test_uint8_input_is_cast_not_wrapped(self, vgg):
        x = np.random.default_rng(0).integers(0, 256, (1, 24, 24, 3)).astype("uint8")
        out = vgg(x)
        assert out.dtype == "float32"
        np.testing.assert_allclose(out, vgg(x.astype("float32")), rtol=1e-6)


class TestPaths:
    def test_missing_weights_file(self):
        with pytest.raises(FileNotFoundError, match="no_such_dir/vgg.h5"):
            build_model("vgg16_largefov", backbone_weights="no_such_dir/vgg.h5")

    def test_directory_instead_of_weights_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            build_model("vgg16_largefov", backbone_weights=tmp_path)

    def test_weights_file_that_is_not_hdf5(self, tmp_path):
        path = tmp_path / "weights.h5"
        path.write_text("not hdf5")
        with pytest.raises(ValueError, match="weights.h5"):
            build_model("vgg16_largefov", backbone_weights=path)

    def test_hdf5_file_without_keras_weights(self, tmp_path):
        path = tmp_path / "other.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=np.zeros(3))
        with pytest.raises(ValueError, match="other.h5"):
            build_model("vgg16_largefov", backbone_weights=path)

    def test_weights_of_the_other_backbone_name_the_file(self, vgg_notop_keras3):
        path, _ = vgg_notop_keras3
        with pytest.raises(ValueError, match="vgg16_notop.weights.h5"):
            build_model("resnet101_aspp", backbone_weights=path)

    def test_keras3_weights_renamed_to_h5_under_unicode_path_with_spaces(self, vgg_notop_keras3, tmp_path):
        path, src = vgg_notop_keras3
        odd = tmp_path / "ré seau dir" / "poids vgg.h5"
        odd.parent.mkdir()
        odd.write_bytes(path.read_bytes())
        with pytest.warns(UserWarning, match="fc6/fc7"):
            model = build_model("vgg16_largefov", backbone_weights=odd)
        np.testing.assert_array_equal(
            model.get_layer("block5_conv3").kernel.numpy(), src.get_layer("block5_conv3").kernel.numpy()
        )


class TestConfigs:
    @pytest.mark.parametrize(
        "kwargs,match",
        [
            (dict(num_classes=True), "num_classes=True"),
            (dict(num_classes=-3), "num_classes=-3"),
            (dict(width_multiplier=float("nan")), "width_multiplier=nan"),
            (dict(width_multiplier=float("inf")), "width_multiplier=inf"),
            (dict(width_multiplier="1"), "width_multiplier='1'"),
            (dict(input_shape=(321, 321)), r"input_shape=\(321, 321\)"),
            (dict(input_shape=(0, 321, 3)), r"input_shape=\(0, 321, 3\)"),
            (dict(input_shape=(321, 321, 1)), r"input_shape=\(321, 321, 1\)"),
            (dict(backbone_weights=3), "backbone_weights=3"),
            (dict(freeze_bn="yes"), "freeze_bn='yes'"),
            (dict(dropout=-0.1), "dropout=-0.1"),
            (dict(msc_scales=()), r"scales=\(\)"),
            (dict(msc_scales=(1.0, -0.5)), r"scales=\(1.0, -0.5\)"),
            (dict(msc_scales=(1.0, 0.5, 0.5)), r"scales=\(1.0, 0.5, 0.5\)"),
            (dict(model_name="a/b"), "model_name='a/b'"),
            (dict(name="VGG16_LargeFOV"), "VGG16_LargeFOV"),
        ],
    )
    def test_bad_build_argument_is_named(self, kwargs, match):
        kwargs = {"name": "vgg16_largefov", "width_multiplier": SMALL, **kwargs}
        with pytest.raises(ValueError, match=match):
            build_model(**kwargs)

    def test_bad_resize_arguments_are_named(self):
        with pytest.raises(ValueError, match=r"size_hw=\(0, 5\)"):
            resize_logits(np.zeros((1, 2, 2, 3), "float32"), (0, 5))
        with pytest.raises(ValueError, match="logits.shape"):
            resize_logits(np.zeros((2, 2, 3), "float32"), (4, 4))
        with pytest.raises(ValueError, match="size=None"):
            ResizeLogits()(np.zeros((1, 2, 2, 3), "float32"))

    def test_wrappers_reject_non_models(self):
        with pytest.raises(ValueError, match="model='vgg'"):
            wrap_msc("vgg")
        with pytest.raises(ValueError, match="model='vgg'"):
            classifier_layers("vgg")

    def test_very_small_width_keeps_at_least_one_filter(self):
        model = build_model("vgg16_aspp_s", width_multiplier=1e-3)
        convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
        assert min(l.filters for l in convs) == 1
        assert tuple(model(_images((1, 16, 16, 3))).shape) == (1, 3, 3, 21)  # 16 -> 9 -> 5 -> 3 (Caffe ceil-mode pools)


class TestNumbers:
    def test_large_magnitude_input_stays_finite(self, vgg, resnet):
        x = _images((1, 33, 33, 3), scale=1e4)
        for model in (vgg, resnet):
            assert np.isfinite(model(x).numpy()).all()

    def test_mixed_precision_policy_still_gives_float32_logits(self):
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            model = build_model("resnet101_aspp", width_multiplier=SMALL, msc_scales=(1.0, 0.5))
            out = model(_images((1, 33, 33, 3)))
        finally:
            keras.mixed_precision.set_global_policy(previous)
        assert out.dtype == "float32" and np.isfinite(out.numpy()).all()

    def test_inference_is_deterministic_and_dropout_only_in_training(self, vgg):
        x = _images((1, 40, 40, 3))
        np.testing.assert_array_equal(vgg(x, training=False), vgg(x, training=False))
        assert not np.allclose(vgg(x, training=True), vgg(x, training=False))


class TestNothingLost:
    def test_failed_weight_load_leaves_the_model_untouched(self, tmp_path):
        model = build_model("vgg16_largefov")
        layer = model.get_layer("block1_conv1")
        path = tmp_path / "partial.h5"
        kernel = np.ones(layer.kernel.shape, "float32")
        with h5py.File(path, "w") as f:  # legacy layout with only the first conv
            f.attrs["layer_names"] = [b"block1_conv1"]
            g = f.create_group("block1_conv1")
            g.attrs["weight_names"] = [b"block1_conv1/kernel", b"block1_conv1/bias"]
            g.create_dataset("block1_conv1/kernel", data=kernel)
            g.create_dataset("block1_conv1/bias", data=np.ones(64, "float32"))
        before = layer.kernel.numpy().copy()
        with pytest.raises(ValueError, match="'block1_conv2'"):
            load_backbone_weights(model, path, "vgg16")
        np.testing.assert_array_equal(layer.kernel.numpy(), before)

    def test_msc_training_dict_survives_keras_file(self, vgg, tmp_path):
        msc = wrap_msc(vgg, scales=(1.0, 0.75), training_outputs=True)
        path = tmp_path / "msc.keras"
        msc.save(path)
        loaded = keras.models.load_model(path)
        x = _images((1, 30, 41, 3))
        a, b = msc(x), loaded(x)
        assert sorted(b) == ["fused", "scale_0.75", "scale_1.00"]
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5)
        assert [l.name for l in classifier_layers(loaded)] == ["fc8"]
