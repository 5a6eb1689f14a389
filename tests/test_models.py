"""Behaviour of deeplab_keras.models: shapes, parameter counts, structure, gradients,
frozen BatchNorm, MSC, serialization, argument checks.

Full-size models are built only where the property needs them (parameter counts,
layer configuration, one full-width forward pass); everything that runs data
uses width_multiplier=1/16 (the output shape does not depend on the width).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.models import (
    OUTPUT_STRIDE,
    ResizeLogits,
    available_models,
    build_model,
    classifier_layers,
    resize_logits,
    wrap_msc,
)
from deeplab_keras.models.registry import get_spec
from deeplab_keras.models.strides import logits_size, strides_to_dilations

SMALL = 1 / 16
NAMES = ["vgg16_largefov", "vgg16_aspp_s", "vgg16_aspp_l", "resnet101_aspp"]

# Exact parameter counts with 21 classes (README table). vgg16_largefov is the
# DESIGN.md figure: 14,714,688 (VGG16 convs) + 4,719,616 (fc6) + 1,049,600 (fc7)
# + 21,525 (fc8). resnet101_aspp: keras.applications ResNet101 without top
# (42,658,176, incl. BN statistics) + 4 x (3*3*2048*21 + 21).
PARAM_COUNTS = {
    "vgg16_largefov": 20_505_429,
    "vgg16_aspp_s": 37_877_652,
    "vgg16_aspp_l": 37_877_652,
    "resnet101_aspp": 44_206_548,
}


def _images(shape, seed=0):
    # Preprocessed images are roughly zero-mean with a spread of tens.
    return np.random.default_rng(seed).normal(0, 50, shape).astype("float32")


@pytest.fixture(scope="module")
def full_models():
    keras.utils.set_random_seed(0)
    return {name: build_model(name) for name in NAMES}


@pytest.fixture(scope="module")
def small_models():
    keras.utils.set_random_seed(0)
    return {name: build_model(name, width_multiplier=SMALL) for name in NAMES}


def test_available_models_lists_the_four_networks():
    assert available_models() == sorted(NAMES)
    assert OUTPUT_STRIDE == 8


@pytest.mark.parametrize("name", NAMES)
def test_exact_parameter_count_with_21_classes(full_models, name):
    assert full_models[name].count_params() == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hw", [(321, 321), (513, 513), (97, 131), (375, 500)])
def test_logits_follow_caffe_size_arithmetic(small_models, name, hw):
    out = small_models[name](_images((1, *hw, 3)))
    assert tuple(out.shape) == (1, *logits_size(get_spec(name).backbone, hw), 21)
    assert out.dtype == tf.float32


@pytest.mark.parametrize("name", ["vgg16_largefov", "resnet101_aspp"])
def test_full_width_forward_shape_and_finite(full_models, name):
    out = full_models[name](_images((1, 41, 57, 3))).numpy()
    assert out.shape == (1, 6, 8, 21)
    assert np.isfinite(out).all()


def test_num_classes_sets_the_logit_channels():
    model = build_model("vgg16_aspp_s", num_classes=5, width_multiplier=SMALL)
    assert tuple(model(_images((2, 33, 40, 3))).shape) == (2, 5, 6, 5)  # 33->17->9->5, 40->21->11->6


def test_fixed_input_shape_gives_static_output_shape():
    model = build_model("resnet101_aspp", input_shape=(321, 321, 3), width_multiplier=SMALL)
    assert model.output_shape == (None, 41, 41, 21)


def _cfg(model, name):
    return model.get_layer(name).get_config()


def test_vgg16_largefov_structure_follows_the_paper(full_models):
    m = full_models["vgg16_largefov"]
    for block in (1, 2, 3):
        assert tuple(_cfg(m, f"block{block}_pool")["strides"]) == (2, 2)
    for block in (4, 5):
        assert tuple(_cfg(m, f"block{block}_pool")["strides"]) == (1, 1)
    for block in range(1, 5):
        assert tuple(_cfg(m, f"block{block}_conv1")["dilation_rate"]) == (1, 1)
    for i in (1, 2, 3):
        assert tuple(_cfg(m, f"block5_conv{i}")["dilation_rate"]) == (2, 2)
    assert all(tuple(_cfg(m, f"block{b}_pool")["pool_size"]) == (3, 3) for b in range(1, 6))
    fc6, fc7, fc8 = (_cfg(m, n) for n in ("fc6", "fc7", "fc8"))
    assert (tuple(fc6["kernel_size"]), tuple(fc6["dilation_rate"]), fc6["filters"]) == ((3, 3), (12, 12), 1024)
    assert (tuple(fc7["kernel_size"]), fc7["filters"]) == ((1, 1), 1024)
    assert (tuple(fc8["kernel_size"]), fc8["filters"]) == ((1, 1), 21)
    assert _cfg(m, "drop6")["rate"] == 0.5 and _cfg(m, "drop7")["rate"] == 0.5


def test_largefov_pool5a_is_caffe_ave_pool_including_padding():
    """pool5a (AVE k3 s1 p1) divides by 9 everywhere, also at the border."""
    model = build_model("vgg16_largefov", width_multiplier=SMALL)
    pool5a = keras.Model(model.get_layer("pool5a_pad").input, model.get_layer("pool5a").output)
    x = np.ones((1, 4, 5, model.get_layer("pool5a").input.shape[-1]), "float32")
    out = pool5a(x).numpy()[0, :, :, 0]
    expected = np.full((4, 5), 9.0)
    expected[[0, -1], :] = 6.0
    expected[:, [0, -1]] = 6.0
    expected[[0, 0, -1, -1], [0, -1, 0, -1]] = 4.0
    np.testing.assert_allclose(out, expected / 9.0, rtol=1e-6)
    assert not model.get_layer("pool5a").weights
    assert "pool5a" not in [l.name for l in build_model("vgg16_aspp_l", width_multiplier=SMALL).layers]


def test_stride2_pools_use_caffe_ceil_mode_windows():
    """375x500 -> 48x64 (Caffe LargeFOV); windows start at -1 as in Caffe, not at 0."""
    from deeplab_keras.models.layers import caffe_max_pool

    x = keras.Input((None, None, 1))
    pool = keras.Model(x, caffe_max_pool(x, 3, 2, 1, name="p", pad_name="p_pad"))
    row = np.arange(1, 7, dtype="float32").reshape(1, 1, 6, 1)  # width 6 -> Caffe 4 outputs
    np.testing.assert_array_equal(pool(row).numpy().ravel(), [2, 4, 6, 6])
    model = build_model("vgg16_largefov", width_multiplier=SMALL)
    assert tuple(model(_images((1, 375, 500, 3))).shape[1:3]) == (48, 64)


def test_resnet_batchnorm_epsilon_is_caffe_default(small_models):
    bns = [l for l in small_models["resnet101_aspp"].layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.epsilon == 1e-5 for l in bns)


@pytest.mark.parametrize("name,rates", [("vgg16_aspp_s", (2, 4, 8, 12)), ("vgg16_aspp_l", (6, 12, 18, 24))])
def test_vgg_aspp_branch_rates(full_models, name, rates):
    m = full_models[name]
    got = tuple(_cfg(m, f"fc6_{k}")["dilation_rate"][0] for k in range(1, 5))
    assert got == rates
    assert [_cfg(m, f"fc7_{k}")["filters"] for k in range(1, 5)] == [1024] * 4


def test_resnet101_structure_follows_deeplab_v2(full_models):
    m = full_models["resnet101_aspp"]
    blocks = {s: sum(1 for l in m.layers if l.name.startswith(f"conv{s}_block") and l.name.endswith("_1_conv"))
              for s in (2, 3, 4, 5)}
    assert blocks == {2: 3, 3: 4, 4: 23, 5: 3}
    # Stride on the first 1x1 conv (v1): conv3 keeps it, conv4/conv5 trade it for dilation.
    assert tuple(_cfg(m, "conv3_block1_1_conv")["strides"]) == (2, 2)
    assert tuple(_cfg(m, "conv3_block1_2_conv")["strides"]) == (1, 1)
    for stage, dilation in ((2, 1), (3, 1), (4, 2), (5, 4)):
        assert tuple(_cfg(m, f"conv{stage}_block1_1_conv")["strides"]) == ((2, 2) if stage == 3 else (1, 1))
        assert tuple(_cfg(m, f"conv{stage}_block1_0_conv")["strides"]) == ((2, 2) if stage == 3 else (1, 1))
        for b in range(1, blocks[stage] + 1):
            assert tuple(_cfg(m, f"conv{stage}_block{b}_2_conv")["dilation_rate"]) == (dilation, dilation)
    aspp = [_cfg(m, f"aspp_{k}") for k in range(1, 5)]
    assert [a["dilation_rate"][0] for a in aspp] == [6, 12, 18, 24]
    assert all(tuple(a["kernel_size"]) == (3, 3) and a["filters"] == 21 for a in aspp)
    assert all(m.get_layer(f"aspp_{k}").kernel.shape[2] == 2048 for k in range(1, 5))


def test_backbone_layer_names_and_shapes_match_keras_applications(full_models):
    """Same names and weight shapes as keras.applications, so weights load by name."""
    vgg = keras.applications.VGG16(weights=None, include_top=False)
    ours = full_models["vgg16_largefov"]
    for layer in vgg.layers:
        if layer.weights:
            assert [w.shape for w in ours.get_layer(layer.name).weights] == [w.shape for w in layer.weights]


def test_output_stride_derived_from_one_setting():
    assert strides_to_dilations([2, 2, 2, 2, 2], 8) == [(2, 1), (2, 1), (2, 1), (1, 2), (1, 4)]
    assert strides_to_dilations([2, 2, 2, 2, 2], 16) == [(2, 1)] * 4 + [(1, 2)]
    assert strides_to_dilations([1, 2, 2, 2], 8, input_stride=4) == [(1, 1), (2, 1), (1, 2), (1, 4)]
    assert strides_to_dilations([1, 2, 2, 2], 32, input_stride=4) == [(1, 1), (2, 1), (2, 1), (2, 1)]
    with pytest.raises(ValueError, match="output_stride=12"):
        strides_to_dilations([2, 2, 2, 2, 2], 12)
    # The backbone follows the setting: output stride 16 halves the feature map again.
    from deeplab_keras.models.resnet import resnet101_backbone

    x = keras.Input((None, None, 3))
    feats = keras.Model(x, resnet101_backbone(x, SMALL, output_stride=16))
    assert tuple(feats(_images((1, 65, 65, 3))).shape[1:3]) == (5, 5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_trainable_weight_without_nan(small_models, name):
    model = small_models[name]
    x = _images((2, 35, 43, 3), seed=1)
    labels = np.random.default_rng(2).integers(0, 21, (2, *logits_size(get_spec(name).backbone, (35, 43))))
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )
    grads = tape.gradient(loss, model.trainable_weights)
    assert np.isfinite(loss.numpy()) and np.isfinite(logits.numpy()).all()
    assert len(grads) == len(model.trainable_weights) > 0
    for var, grad in zip(model.trainable_weights, grads):
        assert grad is not None, var.path
        g = tf.convert_to_tensor(grad).numpy()
        assert np.isfinite(g).all(), var.path
        assert np.abs(g).max() > 0, var.path


def _bn_layers(model):
    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def _fit(model):
    # run_eagerly only skips the (slow, for ResNet-101) graph tracing: fit still
    # calls the layers with training=True, which is what frozen BN must ignore.
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    x = _images((4, 33, 33, 3), seed=3)
    y = np.random.default_rng(4).integers(0, 21, (4, 5, 5))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # one step


def test_frozen_bn_keeps_moving_statistics_during_fit():
    keras.utils.set_random_seed(1)
    model = build_model("resnet101_aspp", width_multiplier=SMALL)  # freeze_bn=True by default
    bns = _bn_layers(model)
    assert len(bns) == 104 and not any(l.trainable for l in bns)
    before = [[w.copy() for w in l.get_weights()] for l in bns]
    conv_before = model.get_layer("conv1_conv").get_weights()[0].copy()
    _fit(model)
    for layer, old in zip(bns, before):
        for w_old, w_new in zip(old, layer.get_weights()):
            np.testing.assert_array_equal(w_old, w_new, err_msg=layer.name)
    assert not np.array_equal(conv_before, model.get_layer("conv1_conv").get_weights()[0])
    x = _images((2, 33, 33, 3), seed=5)
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_unfrozen_bn_updates_moving_statistics_during_fit():
    # The counterpart of the test above: shows that it can fail.
    keras.utils.set_random_seed(1)
    model = build_model("resnet101_aspp", width_multiplier=SMALL, freeze_bn=False)
    layer = model.get_layer("conv1_bn")
    mean_before = layer.moving_mean.numpy().copy()
    _fit(model)
    assert not np.allclose(mean_before, layer.moving_mean.numpy())


def test_classifier_layers_are_the_10x_lr_layers(small_models):
    names = {n: [l.name for l in classifier_layers(m)] for n, m in small_models.items()}
    assert names == {
        "vgg16_largefov": ["fc8"],
        "vgg16_aspp_s": ["fc8_1", "fc8_2", "fc8_3", "fc8_4"],
        "vgg16_aspp_l": ["fc8_1", "fc8_2", "fc8_3", "fc8_4"],
        "resnet101_aspp": ["aspp_1", "aspp_2", "aspp_3", "aspp_4"],
    }
    msc = wrap_msc(small_models["resnet101_aspp"])
    assert classifier_layers(msc) == classifier_layers(small_models["resnet101_aspp"])


def test_classifier_init_is_gaussian_0_01_with_zero_bias():
    keras.utils.set_random_seed(0)
    model = build_model("vgg16_aspp_l", width_multiplier=SMALL)
    k = np.concatenate([l.kernel.numpy().ravel() for l in classifier_layers(model)])
    assert abs(k.std() - 0.01) < 0.002 and abs(k.mean()) < 0.002
    assert all(not l.bias.numpy().any() for l in classifier_layers(model))


def test_resize_logits_is_bilinear_half_pixel():
    logits = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
    out = resize_logits(logits, (37, 53))
    assert tuple(out.shape) == (2, 37, 53, 3) and out.dtype == tf.float32
    expected = tf.image.resize(logits, (37, 53), method="bilinear")
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # A linear ramp stays linear in the interior under bilinear interpolation.
    ramp = np.tile(np.arange(4, dtype="float32")[None, None, :, None], (1, 1, 1, 1))
    up = resize_logits(ramp, (1, 8)).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(up[1:-1], [0.25, 0.75, 1.25, 1.75, 2.25, 2.75], rtol=1e-6)


def test_resize_logits_layer_matches_function_and_input_size(small_models):
    base = small_models["vgg16_largefov"]
    full = keras.Model(base.input, ResizeLogits(name="upsample")([base.output, base.input]))
    x = _images((1, 50, 61, 3))
    out = full(x)
    assert tuple(out.shape) == (1, 50, 61, 21)
    np.testing.assert_allclose(out, resize_logits(base(x), (50, 61)), rtol=1e-5, atol=1e-5)
    fixed = ResizeLogits(size=(9, 11))
    assert tuple(fixed(np.zeros((1, 3, 4, 2), "float32")).shape) == (1, 9, 11, 2)


def test_msc_outputs_and_max_fusion_match_a_manual_computation(small_models):
    base = small_models["vgg16_aspp_l"]
    msc = wrap_msc(base, scales=(1.0, 0.75, 0.5), training_outputs=True)
    assert len(msc.trainable_weights) == len(base.trainable_weights)  # shared weights
    x = _images((2, 57, 70, 3))
    out = msc(x)
    assert sorted(out) == ["fused", "scale_0.50", "scale_0.75", "scale_1.00"]
    assert tuple(out["fused"].shape) == (2, 8, 10, 21)
    assert tuple(out["scale_1.00"].shape) == (2, 8, 10, 21)
    assert tuple(out["scale_0.75"].shape) == (2, 7, 8, 21)  # input ceil(57*.75)=43 x 53
    assert tuple(out["scale_0.50"].shape) == (2, 5, 6, 21)  # input 29 x 35
    maps = []
    for s in (1.0, 0.75, 0.5):
        size = (math.ceil(57 * s), math.ceil(70 * s))
        xs = x if s == 1.0 else tf.image.resize(x, size, method="bilinear")
        logits = base(xs)
        np.testing.assert_allclose(out[f"scale_{s:.2f}"], logits, rtol=1e-4, atol=1e-4)
        maps.append(tf.image.resize(logits, (8, 10), method="bilinear"))
    np.testing.assert_allclose(out["fused"], tf.reduce_max(tf.stack(maps), 0), rtol=1e-4, atol=1e-4)
    fused_only = wrap_msc(base)
    np.testing.assert_allclose(fused_only(x), out["fused"], rtol=1e-5, atol=1e-5)


def test_build_model_msc_arguments():
    model = build_model("vgg16_aspp_s", width_multiplier=SMALL, msc_scales=(1.0, 0.5),
                        msc_training_outputs=True)
    assert model.name == "vgg16_aspp_s_msc"
    out = model(_images((1, 65, 65, 3)))
    assert {k: tuple(v.shape[1:3]) for k, v in out.items()} == {
        "fused": (9, 9), "scale_1.00": (9, 9), "scale_0.50": (5, 5)}


def _roundtrip_models(small_models):
    base = small_models["resnet101_aspp"]
    vgg = small_models["vgg16_largefov"]
    return {
        "vgg16_largefov": vgg,
        "resnet101_aspp": base,
        "msc_dict": wrap_msc(vgg, training_outputs=True),
        "resize_layer": keras.Model(vgg.input, ResizeLogits()([vgg.output, vgg.input]), name="full_res"),
    }


def _as_list(out):
    return [out[k] for k in sorted(out)] if isinstance(out, dict) else [out]


@pytest.mark.parametrize("kind", ["vgg16_largefov", "resnet101_aspp", "msc_dict", "resize_layer"])
def test_keras_file_and_config_roundtrips_reproduce_outputs(small_models, tmp_path, kind):
    model = _roundtrip_models(small_models)[kind]
    x = _images((1, 45, 38, 3), seed=7)
    expected = _as_list(model(x))

    path = tmp_path / f"{kind}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: layers are registered
    for a, b in zip(expected, _as_list(loaded(x))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if kind == "resnet101_aspp":
        assert not any(l.trainable for l in _bn_layers(loaded))  # BN stays frozen

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    for a, b in zip(expected, _as_list(clone(x))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


BAD_ARGS = [
    (dict(name="vgg19"), ValueError, "vgg19"),
    (dict(name="vgg16_largefov", num_classes=0), ValueError, "num_classes=0"),
    (dict(name="vgg16_largefov", num_classes=2.5), ValueError, "num_classes=2.5"),
    (dict(name="vgg16_largefov", input_shape=(None, None, 2)), ValueError, r"input_shape=\(None, None, 2\)"),
    (dict(name="vgg16_largefov", width_multiplier=0), ValueError, "width_multiplier=0"),
    (dict(name="vgg16_largefov", width_multiplier=-1.0), ValueError, "width_multiplier=-1.0"),
    (dict(name="vgg16_largefov", width_multiplier=0.5, backbone_weights="imagenet"), ValueError,
     "width_multiplier=0.5"),
    (dict(name="resnet101_aspp", backbone_weights="/nonexistent/w.h5"), FileNotFoundError, "/nonexistent/w.h5"),
    (dict(name="vgg16_largefov", dropout=1.0), ValueError, "dropout=1.0"),
    (dict(name="vgg16_largefov", msc_scales=(0.75, 0.5)), ValueError, "1.0"),
    (dict(name="vgg16_largefov", msc_training_outputs=True), ValueError, "msc_scales=None"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD_ARGS, ids=[str(a[0]) for a in BAD_ARGS])
def test_bad_arguments_raise_naming_the_value(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_model(**kwargs)


def test_caffe_interp_msc_sizes_and_keras_roundtrip(small_models, tmp_path):
    """caffe_interp=True: Interp sizes ((H-1)//shrink)*zoom+1 with aligned corners, saved in the config."""
    from deeplab_keras.models.layers import ScaleImage, scaled_size

    assert [scaled_size(375, s, caffe=True) for s in (0.75, 0.5)] == [280, 188]
    assert [scaled_size(375, s) for s in (0.75, 0.5)] == [282, 188]
    x = _images((1, 9, 9, 1))
    np.testing.assert_allclose(ScaleImage(0.5, caffe_interp=True)(x), x[:, ::2, ::2], rtol=1e-6)  # corners align
    with pytest.raises(ValueError, match="scale=0.7071"):
        ScaleImage(0.7071, caffe_interp=True)
    msc = wrap_msc(small_models["vgg16_largefov"], caffe_interp=True)
    path = tmp_path / "msc.keras"
    msc.save(path)
    x = _images((1, 57, 70, 3))
    np.testing.assert_allclose(keras.models.load_model(path)(x), msc(x), rtol=1e-5, atol=1e-5)
    assert np.abs(msc(x) - wrap_msc(small_models["vgg16_largefov"])(x)).max() > 1e-4
