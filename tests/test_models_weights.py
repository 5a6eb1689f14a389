"""ImageNet initialisation, tested offline: keras.applications models built with
weights=None are saved to temporary files and loaded through backbone_weights=path;
every backbone array must equal its source, VGG fc6/fc7 the decimated fc1/fc2."""

import h5py
import keras
import numpy as np
import pytest

from deeplab_keras.models import build_model, decimate_vgg_fc
from deeplab_keras.models.weights import backbone_layers


def _arrays(model):
    return {l.name: [np.asarray(w) for w in l.get_weights()] for l in model.layers if l.weights}


def write_legacy_weights(path, arrays):
    """Legacy Keras HDF5 weights-only layout, as in the files Keras downloads for ImageNet."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in arrays]
        for name, ws in arrays.items():
            g = f.create_group(name)
            kinds = ["kernel", "bias"] if len(ws) == 2 else ["gamma", "beta", "moving_mean", "moving_variance"]
            g.attrs["weight_names"] = [f"{name}/{k}".encode() for k in kinds[: len(ws)]]
            for k, w in zip(kinds, ws):
                g.create_dataset(f"{name}/{k}", data=w)


@pytest.fixture(scope="module")
def vgg_top(tmp_path_factory):
    """keras.applications.VGG16 with its fc top, saved in both formats:
    model.save (legacy .h5, read by name) and save_weights (Keras 3 .weights.h5)."""
    keras.utils.set_random_seed(11)
    src = keras.applications.VGG16(weights=None, include_top=True, classes=10)
    folder = tmp_path_factory.mktemp("vgg")
    paths = {"legacy": folder / "vgg16_top.h5", "keras3": folder / "vgg16_top.weights.h5"}
    src.save(paths["legacy"])
    src.save_weights(paths["keras3"])
    return paths, _arrays(src)


@pytest.fixture(scope="module")
def resnet_src(tmp_path_factory):
    """keras.applications.ResNet101 without top, saved with save_weights (.weights.h5)."""
    keras.utils.set_random_seed(12)
    src = keras.applications.ResNet101(weights=None, include_top=False)
    for layer in src.layers:  # non-trivial BN statistics, so that copying them is visible
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.random.default_rng(0).normal(size=n).astype("float32"))
            layer.moving_variance.assign(np.random.default_rng(1).uniform(0.5, 2, n).astype("float32"))
    path = tmp_path_factory.mktemp("resnet") / "resnet101_notop.weights.h5"
    src.save_weights(path)
    return path, src


def _assert_backbone_equals(model, source_arrays):
    layers = backbone_layers(model)
    assert layers, "no backbone layers"
    for layer in layers:
        for got, want in zip(layer.get_weights(), source_arrays[layer.name]):
            np.testing.assert_array_equal(got, want, err_msg=layer.name)
    return layers


@pytest.mark.parametrize("name,fmt", [("vgg16_largefov", "legacy"), ("vgg16_aspp_l", "keras3")])
def test_vgg16_file_with_top_loads_convs_and_decimated_fc(vgg_top, name, fmt):
    paths, src = vgg_top
    model = build_model(name, backbone_weights=str(paths[fmt]))
    layers = _assert_backbone_equals(model, src)
    assert [l.name for l in layers] == [n for n in src if n.startswith("block")]  # all 13 convs
    k6, b6, k7, b7 = decimate_vgg_fc(*src["fc1"], *src["fc2"])
    fc6 = [l for l in model.layers if l.name.startswith("fc6")]
    fc7 = [l for l in model.layers if l.name.startswith("fc7")]
    assert len(fc6) == len(fc7) == (1 if name == "vgg16_largefov" else 4)
    for layer in fc6:
        np.testing.assert_array_equal(layer.kernel.numpy(), k6)
        np.testing.assert_array_equal(layer.bias.numpy(), b6)
    for layer in fc7:
        np.testing.assert_array_equal(layer.kernel.numpy(), k7)
        np.testing.assert_array_equal(layer.bias.numpy(), b7)


def test_decimation_takes_every_third_tap_and_every_fourth_filter():
    fc1 = np.arange(25088 * 4096, dtype=np.float32).reshape(25088, 4096)
    fc2 = np.arange(4096 * 4096, dtype=np.float32).reshape(4096, 4096)
    b = np.arange(4096, dtype=np.float32)
    k6, b6, k7, b7 = decimate_vgg_fc(fc1, b, fc2, b)
    assert k6.shape == (3, 3, 512, 1024) and k7.shape == (1, 1, 1024, 1024)
    rng = np.random.default_rng(0)
    for _ in range(50):
        i, j, c, o = rng.integers(0, 3), rng.integers(0, 3), rng.integers(0, 512), rng.integers(0, 1024)
        # Keras Flatten order of the 7x7x512 pool5 map: row, column, channel.
        assert k6[i, j, c, o] == fc1[(3 * i * 7 + 3 * j) * 512 + c, 4 * o]
        p, q = rng.integers(0, 1024, 2)
        assert k7[0, 0, p, q] == fc2[4 * p, 4 * q]
    np.testing.assert_array_equal(b6, b[::4])
    np.testing.assert_array_equal(b7, b[::4])
    with pytest.raises(ValueError, match=r"fc1 kernel.*\(4096, 4096\)"):
        decimate_vgg_fc(fc2, b, fc2, b)


def test_resnet101_weights_h5_loads_every_backbone_layer(resnet_src):
    path, src = resnet_src
    model = build_model("resnet101_aspp", backbone_weights=path)
    layers = _assert_backbone_equals(model, _arrays(src))
    assert {l.name for l in layers} == {l.name for l in src.layers if l.weights}
    # conv1 + 33 blocks x 3 convs + 4 projection shortcuts = 104 convs, each with a BN.
    assert len(layers) == 208
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in layers) == 104


def test_imagenet_goes_through_keras_applications(resnet_src, monkeypatch):
    """No internet here: stand in for the download, check the by-name copy."""
    _, src = resnet_src
    calls = []

    def fake_resnet101(include_top, weights, classes):
        calls.append((include_top, weights))
        return src

    monkeypatch.setattr(keras.applications, "ResNet101", fake_resnet101)
    model = build_model("resnet101_aspp", backbone_weights="imagenet")
    assert calls == [(False, "imagenet")]
    _assert_backbone_equals(model, _arrays(src))


def test_vgg16_file_without_top_warns_and_keeps_fc_random(vgg_top, tmp_path):
    _, src = vgg_top
    path = tmp_path / "vgg16_notop.h5"
    write_legacy_weights(path, {n: w for n, w in src.items() if n.startswith("block")})
    keras.utils.set_random_seed(3)
    with pytest.warns(UserWarning, match="fc6/fc7 keep their random initialisation"):
        model = build_model("vgg16_largefov", backbone_weights=path)
    _assert_backbone_equals(model, src)
    k6, _, _, _ = decimate_vgg_fc(*src["fc1"], *src["fc2"])
    assert not np.allclose(model.get_layer("fc6").kernel.numpy(), k6)


def test_mismatched_layer_is_named_and_nothing_is_loaded(vgg_top, tmp_path):
    _, src = vgg_top
    convs = {n: w for n, w in src.items() if n.startswith("block")}
    bad = dict(convs, block3_conv2=[convs["block3_conv2"][0][:, :, :128], convs["block3_conv2"][1]])
    path = tmp_path / "bad_shape.h5"
    write_legacy_weights(path, bad)
    with pytest.raises(ValueError, match="'block3_conv2'.*\\(3, 3, 256, 256\\).*\\(3, 3, 128, 256\\)"):
        build_model("vgg16_largefov", backbone_weights=path)

    missing = {n: w for n, w in convs.items() if n != "block5_conv3"}
    path = tmp_path / "missing.h5"
    write_legacy_weights(path, missing)
    model = build_model("vgg16_largefov")
    before = model.get_layer("block1_conv1").kernel.numpy().copy()
    from deeplab_keras.models import load_backbone_weights

    with pytest.raises(ValueError, match="'block5_conv3'"):
        load_backbone_weights(model, path, "vgg16")
    np.testing.assert_array_equal(before, model.get_layer("block1_conv1").kernel.numpy())
