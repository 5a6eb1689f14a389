"""Released-model presets (`load_pretrained`), label sets, and released files as backbone_weights."""

import zipfile

import keras
import numpy as np
import pytest

from deeplab_keras import labels
from deeplab_keras.convert.caffemodel import write_caffemodel
from deeplab_keras.convert.convert import convert, save_atomic
from deeplab_keras.models import available_pretrained, build_model, get_release, load_pretrained
from deeplab_keras import pretrained as pretrained_mod
from deeplab_keras.models.weights import load_backbone_weights
from tests.test_convert_reference import WIDTH, images, random_blobs, resnet101_net, vgg_largefov_net


def _layers(net, blobs):
    return [(l["name"], l["type"], blobs[l["name"]]) for l in net if l["name"] in blobs]


def test_label_sets_have_the_released_class_counts():
    assert (len(labels.VOC_CLASSES), len(labels.COCO_CLASSES), len(labels.COCOSTUFF_CLASSES)) == (21, 91, 182)
    assert labels.VOC_CLASSES[15] == "person" and labels.COCO_CLASSES[1] == "person"
    assert labels.COCOSTUFF_CLASSES[0] == "person" and labels.COCOSTUFF_CLASSES[-1] == "wood"
    assert labels.labels_for(182) is labels.COCOSTUFF_CLASSES and labels.labels_for(7) is None


def test_registry_entries_are_consistent():
    names = available_pretrained()
    assert "deeplabv2_resnet101_voc" in names and "deeplabv2_resnet101_coco_init" in names
    for name in names:
        r = get_release(name)
        assert len(r.labels) == r.num_classes and r.url.startswith("http")
        assert r.url.endswith((".zip", r.file_name))
    assert get_release("deeplabv2_resnet101_voc").val_miou == (76.35, 77.69)
    with pytest.raises(ValueError, match="Received: name_or_path='deeplab_v9'"):
        load_pretrained("deeplab_v9")


def test_load_pretrained_downloads_extracts_converts_and_caches(tmp_path, monkeypatch):
    """The online path, served from a file:// URL: get_file, unzip, pick the member, convert, cache."""
    net = vgg_largefov_net()
    blobs = random_blobs(net, seed=8)
    member = tmp_path / "train_iter_6000.caffemodel"
    write_caffemodel(member, _layers(net, blobs), v1=True)
    archive = tmp_path / "prototxt_and_model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(member, "prototxt_and_model/train_iter_6000.caffemodel")
    release = get_release("deeplabv1_largefov_voc")
    monkeypatch.setitem(pretrained_mod._RELEASES, release.name,
                        pretrained_mod.Release(**{**release.__dict__, "url": archive.as_uri()}))
    cache = tmp_path / "cache"
    model = load_pretrained(release.name, cache_dir=str(cache), width_multiplier=WIDTH)
    x = images((65, 97))
    expected = convert(member, width_multiplier=WIDTH).model(x)
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)
    cached = list(cache.rglob(f"{release.name}.keras"))
    assert len(cached) == 1
    again = load_pretrained(release.name, cache_dir=str(cache), width_multiplier=WIDTH)
    np.testing.assert_allclose(again(x), expected, rtol=1e-5, atol=1e-5)


def test_local_paths_load_offline(tmp_path):
    net = vgg_largefov_net()
    blobs = random_blobs(net, seed=9)
    src = tmp_path / "train2_iter_8000.caffemodel"
    write_caffemodel(src, _layers(net, blobs), v1=True)
    model = load_pretrained(str(src), width_multiplier=WIDTH)
    out = save_atomic(model, tmp_path / "m.keras")
    x = images((41, 41))
    np.testing.assert_allclose(load_pretrained(out)(x), model(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_pretrained(tmp_path / "missing.keras")


def test_coco_init_caffemodel_as_backbone_weights_keeps_a_fresh_classifier(tmp_path):
    """DeepLab v2's VOC run starts from init.caffemodel (91 classes): backbone in, ASPP fresh."""
    net = resnet101_net(classes=91, head="fc1_coco")
    blobs = random_blobs(net, seed=10)
    src = tmp_path / "init.caffemodel"
    write_caffemodel(src, _layers(net, blobs))
    keras.utils.set_random_seed(0)
    model = build_model("resnet101_aspp", num_classes=21, width_multiplier=WIDTH)
    fresh = [np.array(w) for w in model.get_layer("aspp_1").get_weights()]
    loaded = load_backbone_weights(model, src, "resnet101")
    assert "conv1_conv" in loaded and "conv5_block3_3_bn" in loaded and "aspp_1" not in loaded
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  blobs["conv1"][0].transpose(2, 3, 1, 0))
    for a, b in zip(model.get_layer("aspp_1").get_weights(), fresh):
        np.testing.assert_array_equal(a, b)


def test_import_deeplab_keras_registers_the_released_file_reader():
    """`deeplab_keras.build_model(..., backbone_weights="init.caffemodel")` (the README)
    works in a fresh process that imports nothing else: the models never import the
    converter, so `import deeplab_keras` must have registered a reader, which loads the
    converter only when a released file is read."""
    import subprocess
    import sys

    code = ("import sys, tempfile, os\n"
            "import deeplab_keras\n"
            "from deeplab_keras.models import weights\n"
            "readers = [weights._registered_reader(n) for n in ('init.caffemodel', 'x.pth', 'y.PT')]\n"
            "assert weights._registered_reader('z.h5') is None\n"
            "assert None not in readers and len(set(readers)) == 1, readers\n"
            "assert not [m for m in sys.modules if m.startswith('deeplab_keras.convert')]\n"
            "bad = os.path.join(tempfile.mkdtemp(), 'garbage.caffemodel')\n"
            "open(bad, 'wb').write(b'not a caffemodel')\n"
            "try:\n"
            "    readers[0](None, bad)\n"
            "except ValueError as e:\n"
            "    assert 'garbage.caffemodel' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('a garbage file was read')\n"
            "assert 'deeplab_keras.convert.caffemodel' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, ("import deeplab_keras must register a .caffemodel / .pth reader "
                                  "that loads the converter on first use: "
                                  "registers the .caffemodel / .pth reader: " + proc.stderr[-2000:])


def test_released_file_without_its_reader_is_a_clear_error(monkeypatch, tmp_path):
    from deeplab_keras.models import weights

    monkeypatch.setattr(weights, "_BACKBONE_READERS", {})
    src = tmp_path / "init.caffemodel"
    src.write_bytes(b"")
    model = build_model("vgg16_largefov", width_multiplier=WIDTH)
    with pytest.raises(ValueError, match="read by deeplab_keras.convert.*init.caffemodel"):
        load_backbone_weights(model, src, "vgg16")


def test_vgg16_20m_style_init_fills_every_aspp_branch(tmp_path):
    net = vgg_largefov_net(classes=1000, head="fc8")
    blobs = random_blobs(net, seed=11)
    src = tmp_path / "vgg16_20M.caffemodel"
    write_caffemodel(src, _layers(net, blobs), v1=True)
    model = build_model("vgg16_aspp_l", width_multiplier=WIDTH)
    loaded = load_backbone_weights(model, src, "vgg16")
    assert {f"fc6_{k}" for k in range(1, 5)} <= set(loaded) and "fc8_1" not in loaded
    for k in range(1, 5):
        np.testing.assert_array_equal(model.get_layer(f"fc7_{k}").get_weights()[0],
                                      blobs["fc7"][0].transpose(2, 3, 1, 0))
    # The same through a converted DeepLab .keras file (LargeFOV fc6/fc7 -> every ASPP branch).
    path = save_atomic(convert(src, num_classes=21, width_multiplier=WIDTH).model, tmp_path / "largefov.keras")
    other = build_model("vgg16_aspp_l", width_multiplier=WIDTH)
    load_backbone_weights(other, path, "vgg16")
    for name in ("block5_conv3", "fc6_2", "fc7_4"):
        np.testing.assert_array_equal(other.get_layer(name).get_weights()[0], model.get_layer(name).get_weights()[0])


def test_evaluation_pads_to_513_with_the_mean_and_crops_as_the_released_test_nets():
    """Predictor(pad_to=...) = pad bottom/right with 0 (the mean after preprocessing), run, upsample
    to the padded size, crop: DeepLab's test protocol (513 in the released test.prototxt files)."""
    import tensorflow as tf

    from deeplab_keras.evaluation.evaluate import Predictor

    keras.utils.set_random_seed(0)
    model = build_model("vgg16_largefov", width_multiplier=WIDTH)
    image = images((41, 57))[0]
    got = Predictor(model, pad_to=65)(image).numpy()
    padded = np.zeros((1, 65, 65, 3), np.float32)
    padded[0, :41, :57] = image
    expected = tf.image.resize(model(padded), (65, 65)).numpy()[0, :41, :57]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    unpadded = Predictor(model)(image).numpy()
    assert got.shape == unpadded.shape and np.abs(got - unpadded).max() > 1e-3  # padding matters
    with pytest.raises(ValueError, match="pad_to=0"):
        Predictor(model, pad_to=0)
