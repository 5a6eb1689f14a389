"""Converting released DeepLab files: caffemodels (new and V1 formats) and deeplab-pytorch .pth.

Every file is written here in the real on-disk format with the official layer
names and blob layouts (reduced widths), converted, and the Keras logits are
compared with the independent Caffe reference of test_convert_reference.py
(at small odd/even sizes here; the 321 / 513 / 375x500 parity is in that file).
"""

import collections
import io
import os
import zipfile

import numpy as np
import pytest

from tests.test_convert_reference import (
    WIDTH,
    assert_parity,
    caffe_block,
    images,
    random_blobs,
    resnet101_net,
    run_net,
    vgg_aspp_l_net,
    vgg_largefov_net,
)

torch = pytest.importorskip("torch")

from deeplab_keras.convert import cli  # noqa: E402
from deeplab_keras.convert.caffemodel import CaffeModelError, read_caffemodel, write_caffemodel  # noqa: E402
from deeplab_keras.convert.convert import convert, read_source  # noqa: E402
from deeplab_keras.convert.mapping import plan_weights, source_classes  # noqa: E402
from deeplab_keras.convert.pth import PthError, read_pth  # noqa: E402


def _layers(net, blobs):
    return [(l["name"], l["type"], blobs[l["name"]]) for l in net if l["name"] in blobs]


@pytest.fixture(scope="module")
def resnet_case():
    net = resnet101_net()
    return net, random_blobs(net, seed=3)


@pytest.fixture(scope="module")
def small_resnet():
    """One reduced-width ResNet for the tests that only check the mapping (building one costs seconds)."""
    from deeplab_keras.models import build_model

    return build_model("resnet101_aspp", width_multiplier=WIDTH)


def _plan(path, model):
    fmt, tensors = read_source(path)
    return plan_weights(model, tensors, fmt, repr(str(path)))


@pytest.fixture(scope="module")
def largefov_case():
    net = vgg_largefov_net()
    return net, random_blobs(net, seed=4)


def test_v1_largefov_caffemodel_converts_to_the_reference(tmp_path, largefov_case):
    """DeepLab v1 files are V1 `layers` with legacy 4-d blobs (bias 1x1x1xN) and fc8_voc12."""
    net, blobs = largefov_case
    path = tmp_path / "train_iter_6000.caffemodel"
    write_caffemodel(path, _layers(net, blobs), v1=True)
    _, layers = read_caffemodel(path)
    assert layers[0].legacy_shapes and layers[0].type == "Convolution"
    assert layers[0].blobs[1].shape == (1, 1, 1, blobs["conv1_1"][1].size)
    result = convert(path, width_multiplier=WIDTH)
    assert result.model_name == "vgg16_largefov" and result.num_classes == 21
    assert not result.plan.leftovers and not result.plan.reinitialised
    x = images((95, 130))
    assert_parity(result.model(x), run_net(net, blobs, x))


def test_v2_aspp_l_caffemodel_converts_to_the_reference(tmp_path):
    net = vgg_aspp_l_net()
    blobs = random_blobs(net, seed=5)
    path = tmp_path / "train_iter_20000.caffemodel"
    write_caffemodel(path, _layers(net, blobs))
    result = convert(path, width_multiplier=WIDTH)
    assert result.model_name == "vgg16_aspp_l"
    x = images((97, 64))
    assert_parity(result.model(x), run_net(net, blobs, x))


def _msc_layers(net, blobs):
    """A ResNet MSC caffemodel: every layer again as *_res075 / *_res05 with the same blobs."""
    out = _layers(net, blobs)
    for suffix in ("res075", "res05"):
        for name, type_, arrays in _layers(net, blobs):
            copy = f"fc1_voc12_{suffix}_{name[-2:]}" if name.startswith("fc1_") else f"{name}_{suffix}"
            out.append((copy, type_, arrays))
    return out


def test_resnet_msc_caffemodel_skips_equal_copies_and_matches(tmp_path, resnet_case):
    net, blobs = resnet_case
    path = tmp_path / "train_iter_20000.caffemodel"
    write_caffemodel(path, _msc_layers(net, blobs))
    result = convert(path, width_multiplier=WIDTH)
    assert result.model_name == "resnet101_aspp" and result.num_classes == 21
    n_tensors = sum(len(a) for a in blobs.values())
    assert len(result.plan.msc_copies) == 2 * n_tensors and not result.plan.leftovers
    assert "conv1_conv" in result.plan.zero_bias  # Caffe ResNet convs have no bias
    x = images((95, 130))
    assert_parity(result.model(x), run_net(net, blobs, x))


def test_msc_copy_that_differs_is_an_error_naming_it(tmp_path, resnet_case, small_resnet):
    net, blobs = resnet_case
    layers = _msc_layers(net, blobs)
    name, type_, arrays = next(l for l in layers if l[0] == "res3a_branch2b_res05")
    layers[layers.index((name, type_, arrays))] = (name, type_, [arrays[0] + 1])
    path = tmp_path / "bad_msc.caffemodel"
    write_caffemodel(path, layers)
    with pytest.raises(ValueError, match=r"bad_msc\.caffemodel.*res3a_branch2b_res05"):
        _plan(path, small_resnet)


def test_batchnorm_factor_zero_gives_zero_statistics(tmp_path, resnet_case, small_resnet):
    net, blobs = resnet_case
    blobs = dict(blobs, bn_conv1=[b * 0 for b in blobs["bn_conv1"]])
    path = tmp_path / "f0.caffemodel"
    write_caffemodel(path, _layers(net, blobs))
    arrays = dict((layer.name, a) for layer, a in _plan(path, small_resnet).assign)
    gamma, beta, mean, var = arrays["conv1_bn"]
    assert not mean.any() and not var.any() and np.isfinite(mean).all()
    np.testing.assert_array_equal(gamma, blobs["scale_conv1"][0])
    mean2, var2 = arrays["conv2_block1_1_bn"][2:]  # the others: blob / factor
    m, v, f = blobs["bn2a_branch2a"]
    np.testing.assert_allclose(mean2, m / f[0], rtol=1e-6)
    np.testing.assert_allclose(var2, v / f[0], rtol=1e-6)


def test_coco_init_91_classes_and_num_classes_reinitialises_the_classifier(tmp_path, resnet_case, capsys):
    """init.caffemodel has a 91-class head; --num-classes 21 keeps the backbone, re-inits the ASPP."""
    net = resnet101_net(classes=91, head="fc1_coco")
    blobs = random_blobs(net, seed=6)
    path = tmp_path / "init.caffemodel"
    write_caffemodel(path, _layers(net, blobs))
    assert source_classes(read_source(path)[1], "caffe", "resnet101") == 91
    result = convert(path, num_classes=21, width_multiplier=WIDTH)
    assert result.source_classes == 91 and result.plan.reinitialised == [f"aspp_{k}" for k in range(1, 5)]
    kernel = result.model.get_layer("conv2_block1_2_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, blobs["res2a_branch2b"][0].transpose(2, 3, 1, 0))
    assert any(f"fc1_coco_c{k}/0" in result.plan.leftovers for k in range(4))


# --- deeplab-pytorch .pth ----------------------------------------------------------------------

def pth_state_dict(blobs):
    """deeplab-pytorch's DeepLabV2 (MSC) keys for the Caffe blobs (its converter's naming)."""
    sd = collections.OrderedDict()

    def conv_bn(prefix, conv, bn, scale):
        sd[f"{prefix}.conv.weight"] = torch.from_numpy(blobs[conv][0].copy())
        mean, var, f = blobs[bn]
        sd[f"{prefix}.bn.weight"] = torch.from_numpy(blobs[scale][0].copy())
        sd[f"{prefix}.bn.bias"] = torch.from_numpy(blobs[scale][1].copy())
        sd[f"{prefix}.bn.running_mean"] = torch.from_numpy(mean / f[0])
        sd[f"{prefix}.bn.running_var"] = torch.from_numpy(var / f[0])
        sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)

    conv_bn("base.layer1.conv1", "conv1", "bn_conv1", "scale_conv1")
    for stage, blocks in ((2, 3), (3, 4), (4, 23), (5, 3)):
        for b in range(1, blocks + 1):
            name = caffe_block(stage, b)
            for branch, part in (("branch2a", "reduce"), ("branch2b", "conv3x3"), ("branch2c", "increase"),
                                 ("branch1", "shortcut")):
                if branch == "branch1" and b != 1:
                    continue
                conv_bn(f"base.layer{stage}.block{b}.{part}", f"res{name}_{branch}",
                        f"bn{name}_{branch}", f"scale{name}_{branch}")
    for k in range(4):
        sd[f"base.aspp.c{k}.weight"] = torch.from_numpy(blobs[f"fc1_voc12_c{k}"][0].copy())
        sd[f"base.aspp.c{k}.bias"] = torch.from_numpy(blobs[f"fc1_voc12_c{k}"][1].copy())
    return sd


@pytest.fixture(scope="module")
def pth_files(tmp_path_factory, resnet_case):
    _, blobs = resnet_case
    sd = pth_state_dict(blobs)
    d = tmp_path_factory.mktemp("pth")
    torch.save(sd, d / "new.pth")
    torch.save(sd, d / "legacy.pth", _use_new_zipfile_serialization=False)
    return sd, d / "new.pth", d / "legacy.pth"


def test_safe_reader_and_torch_give_identical_tensors(pth_files):
    sd, new, legacy = pth_files
    assert zipfile.is_zipfile(new) and not zipfile.is_zipfile(legacy)
    for path in (new, legacy):
        with_torch, safe = read_pth(path, use_torch=True), read_pth(path, use_torch=False)
        assert list(safe) == list(sd) == list(with_torch)
        for key, tensor in sd.items():
            np.testing.assert_array_equal(safe[key], tensor.numpy())
            np.testing.assert_array_equal(with_torch[key], tensor.numpy())
            assert safe[key].dtype == tensor.numpy().dtype


def test_pth_converts_to_the_reference(pth_files, resnet_case):
    net, blobs = resnet_case
    result = convert(pth_files[1], width_multiplier=WIDTH)
    assert result.model_name == "resnet101_aspp" and result.source_format == "pth"
    assert result.plan.leftovers == []
    x = images((97, 64))
    assert_parity(result.model(x), run_net(net, blobs, x))


def test_safe_reader_refuses_code_in_the_pickle(tmp_path):
    payload = io.BytesIO()
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    pickle.dump({"x": Evil()}, payload, protocol=2)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload.getvalue())
    with pytest.raises(PthError, match=r"evil\.pth.*refusing to load (posix|os)\.system"):
        read_pth(path, use_torch=False)


# --- the CLI and bad files ---------------------------------------------------------------------

def test_cli_writes_the_model_and_reports(tmp_path, largefov_case, capsys):
    net, blobs = largefov_case
    src = tmp_path / "train2_iter_8000.caffemodel"
    write_caffemodel(src, _layers(net, blobs), v1=True)
    out = tmp_path / "largefov.keras"
    small = ["--width-multiplier", str(WIDTH)]
    assert cli.main([str(src), "--output", str(out), *small]) == 0
    text = capsys.readouterr().out
    assert "vgg16_largefov" in text and "classes: 21" in text and "leftovers (unused source tensors): none" in text
    import keras

    loaded = keras.models.load_model(out)
    x = images((97, 64))
    assert_parity(loaded(x), run_net(net, blobs, x))
    out5 = tmp_path / "five.keras"
    assert cli.main([str(src), "--output", str(out5), "--num-classes", "5", *small]) == 0
    text = capsys.readouterr().out
    assert "re-initialised" in text and "classifier re-initialised" in text and "fc8" in text
    assert keras.models.load_model(out5).output_shape[-1] == 5


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_bad_caffemodel_is_a_clear_error_and_writes_nothing(tmp_path, largefov_case, capsys, damage):
    net, blobs = largefov_case
    src = tmp_path / "model.caffemodel"
    write_caffemodel(src, _layers(net, blobs), v1=True)
    data = src.read_bytes()
    src.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(CaffeModelError, match="model.caffemodel"):
        read_caffemodel(src)
    out = tmp_path / "out.keras"
    assert cli.main([str(src), "--output", str(out)]) == 1
    assert "model.caffemodel" in capsys.readouterr().err
    assert not out.exists() and os.listdir(tmp_path) == ["model.caffemodel"]


def test_caffemodel_of_another_network_names_the_first_missing_layer(tmp_path, capsys, small_resnet):
    # An AlexNet-style file: conv1..conv5 and fc6..fc8 (not DeepLab's names).
    rng = np.random.default_rng(0)
    layers = [("conv1", "Convolution", [rng.normal(size=(8, 3, 11, 11)).astype("f4"), np.zeros(8, "f4")]),
              ("fc8", "InnerProduct", [rng.normal(size=(10, 8)).astype("f4"), np.zeros(10, "f4")])]
    src = tmp_path / "alexnet.caffemodel"
    write_caffemodel(src, layers)
    with pytest.raises(ValueError, match="alexnet.caffemodel.*fit no DeepLab model"):
        convert(src)
    with pytest.raises(ValueError, match=r"alexnet\.caffemodel.*'conv1_1'"):
        convert(src, model="vgg16_largefov", num_classes=21, width_multiplier=WIDTH)
    # conv1 exists in both, with another shape: named with both shapes (at the source's width).
    with pytest.raises(ValueError, match=r"'conv1_conv'.*\(7, 7, 3, 4\).*\(11, 11, 3, 8\), \(8,\)"):
        _plan(src, small_resnet)
    out = tmp_path / "x.keras"
    assert cli.main([str(src), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "alexnet.caffemodel" in err and "fit no DeepLab model" in err and not out.exists()


def test_pth_of_a_different_model_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, src)
    out = tmp_path / "x.keras"
    assert cli.main([str(src), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "resnet18.pth" in err and "deeplab-pytorch" in err and not out.exists()
    (tmp_path / "garbage.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(PthError, match="garbage.pth"):
        read_pth(tmp_path / "garbage.pth", use_torch=False)
    with pytest.raises(PthError, match="garbage.pth"):
        read_pth(tmp_path / "garbage.pth", use_torch=True)


def test_wrong_width_source_names_layer_and_shapes(tmp_path, largefov_case):
    net, blobs = largefov_case
    src = tmp_path / "narrow.caffemodel"
    write_caffemodel(src, _layers(net, blobs))
    with pytest.raises(ValueError, match=r"narrow\.caffemodel.*'block1_conv1'.*conv1_1"):
        convert(src, width_multiplier=WIDTH * 2)
