"""VOCdevkit / SBD readers, split lists, train_aug arithmetic, label decoding."""

import numpy as np
import pytest
from PIL import Image

from deeplab_keras.data import builtin, decode, synthetic, voc
from deeplab_keras.palette import VOC_PALETTE


def _names(prefix, n, start=0):
    return [f"{prefix}_{i:04d}" for i in range(start, start + n)]


@pytest.fixture(scope="module")
def mini_voc_sbd(tmp_path_factory):
    """VOC: train a0..a3, val a4..a6 (a7, a8 have VOC labels but are in no list).
    SBD train: b0..b4 + a0 + a4 (a VOC val name, must be excluded); SBD val: b5, b6, a1."""
    root = tmp_path_factory.mktemp("minivoc")
    voc_train, voc_val = _names("a", 4), _names("a", 3, 4)
    exs = list(synthetic.make_examples(voc_train + voc_val, seed=3,
                                       min_hw=(20, 24), max_hw=(28, 32)))
    synthetic.write_voc(root / "VOCdevkit", exs, {
        "train": voc_train, "val": voc_val, "trainval": voc_train + voc_val})
    sbd_train = _names("b", 5) + ["a_0000", "a_0004"]
    sbd_val = _names("b", 2, 5) + ["a_0001"]
    sbd_only = _names("b", 7)
    sbd_exs = list(synthetic.make_examples(sbd_only + ["a_0000", "a_0001", "a_0004"],
                                           seed=4, min_hw=(20, 24), max_hw=(28, 32),
                                           boundaries=False))
    sbd = synthetic.write_sbd(root / "benchmark_RELEASE" / "dataset", sbd_exs,
                              sbd_train, sbd_val)
    aug = synthetic.write_segmentation_class_aug(root / "SegmentationClassAug", sbd_exs)
    # SegmentationClassAug users take images from VOC's JPEGImages (which holds
    # every SBD image in the real VOC 2012 release).
    for name, image, _ in sbd_exs:
        (root / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{name}.jpg").write_bytes(
            synthetic.jpeg_bytes(image))
    return root, dict(voc_train=voc_train, voc_val=voc_val, sbd_train=sbd_train,
                      sbd_val=sbd_val, sbd=sbd, aug=aug, sbd_exs=sbd_exs)


def test_split_sizes_come_from_imagesets(mini_voc_sbd):
    root, d = mini_voc_sbd
    assert voc.read_split(root / "VOCdevkit", "train") == d["voc_train"]
    assert len(voc.list_examples(root / "VOCdevkit", "val")) == 3
    assert len(voc.list_examples(root / "VOCdevkit", "trainval")) == 7
    # The VOC2012 dir and the dir above VOCdevkit are accepted too.
    assert len(voc.list_examples(root / "VOCdevkit" / "VOC2012", "train")) == 4
    assert len(voc.list_examples(root, "train")) == 4


def test_builtin_split_sizes(tmp_path):
    root = builtin.generate(tmp_path / "b", num_train=5, num_val=3, seed=0)
    assert len(voc.list_examples(root, "train")) == 5
    assert len(voc.list_examples(root, "val")) == 3
    assert [e.name for e in voc.list_examples(root, "trainval")] == [
        e.name for e in voc.list_examples(root, "train") + voc.list_examples(root, "val")]


def test_train_aug_arithmetic_sbd_mat(mini_voc_sbd):
    root, d = mini_voc_sbd
    exs = voc.list_examples(root / "VOCdevkit", "train_aug",
                            sbd_dir=root / "benchmark_RELEASE")
    names = [e.name for e in exs]
    expected = sorted((set(d["sbd_train"]) | set(d["sbd_val"]) | set(d["voc_train"]))
                      - set(d["voc_val"]))
    assert names == expected
    assert "a_0004" not in names  # in SBD train but VOC val: excluded
    assert len(names) == 7 + 4  # b0..b6 + a0..a3
    by = {e.name: e for e in exs}
    # VOC names keep VOC's label; SBD-only names take the .mat label.
    assert by["a_0001"].label_path.endswith("SegmentationClass/a_0001.png")
    assert by["b_0003"].label_path.endswith("cls/b_0003.mat")
    # Same result from benchmark_RELEASE/dataset directly.
    exs2 = voc.list_examples(root / "VOCdevkit", "train_aug", sbd_dir=d["sbd"])
    assert exs2 == exs


def test_train_aug_arithmetic_segmentation_class_aug(mini_voc_sbd):
    root, d = mini_voc_sbd
    exs = voc.list_examples(root / "VOCdevkit", "train_aug", sbd_dir=d["aug"])
    # No lists beside the PNGs: SBD = every PNG (b0..b6, a0, a1, a4).
    assert [e.name for e in exs] == sorted(set(_names("b", 7)) | set(d["voc_train"]))
    by = {e.name: e for e in exs}
    assert by["b_0002"].label_path.endswith("SegmentationClassAug/b_0002.png")
    assert by["b_0002"].image_path.endswith("JPEGImages/b_0002.jpg")


def test_sbd_mat_decodes_to_written_ids(mini_voc_sbd):
    root, d = mini_voc_sbd
    for name, _, label in d["sbd_exs"][:3]:
        got = decode.read_label(d["sbd"] / "cls" / f"{name}.mat")
        np.testing.assert_array_equal(got, label)
        got_png = decode.read_label(d["aug"] / f"{name}.png")
        np.testing.assert_array_equal(got_png, label)


def _label_with_all_ids():
    ids = np.concatenate([np.arange(21), [255] * 11]).astype(np.uint8)
    return np.tile(ids, (3, 1))  # [3, 32]


def test_palette_png_decodes_to_exact_ids_with_255(tmp_path):
    lab = _label_with_all_ids()
    p = tmp_path / "p.png"
    p.write_bytes(synthetic.palette_png_bytes(lab))
    assert Image.open(p).mode == "P"
    kind, hw = decode.inspect_label(p)
    assert kind == decode.LabelKind.COLOUR and hw == (3, 32)
    np.testing.assert_array_equal(decode.read_label(p), lab)


def test_palette_png_tf_decoder_matches(tmp_path):
    import tensorflow as tf

    lab = _label_with_all_ids()
    files = {}
    files["p"] = tmp_path / "p.png"
    files["p"].write_bytes(synthetic.palette_png_bytes(lab))
    files["l"] = tmp_path / "l.png"
    Image.fromarray(lab, "L").save(files["l"])
    files["rgb"] = tmp_path / "rgb.png"
    Image.fromarray(VOC_PALETTE[lab], "RGB").save(files["rgb"])
    for key, path in files.items():
        kind, _ = decode.inspect_label(path)
        got, ok = decode.decode_label_tf(tf.constant(str(path)), int(kind))
        assert bool(ok), key
        np.testing.assert_array_equal(got.numpy(), lab, err_msg=key)
        np.testing.assert_array_equal(decode.read_label(path), lab, err_msg=key)


def test_colour_map_inverse_is_exact_for_all_256_colours():
    ids = decode.colours_to_ids(VOC_PALETTE[None])
    np.testing.assert_array_equal(ids[0], np.arange(256))
    # A colour that is not in the map maps outside 0..255.
    assert decode.colours_to_ids(np.array([[1, 2, 3]], np.uint8))[0] > 255


def test_non_vocdevkit_dir_names_missing_path(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        voc.list_examples(tmp_path / "stuff", "train")


def test_train_aug_pipeline_mixes_palette_pngs_and_sbd_mat(tmp_path):
    """The paper's setup: VOC palette PNGs and SBD .mat labels in one dataset (two
    label decoders in one tf.data map) give exactly the ids the Python readers give."""
    from deeplab_keras.data import make_dataset

    voc_train, voc_val = _names("a", 3), _names("a", 1, 3)
    exs = list(synthetic.make_examples(voc_train + voc_val, seed=5,
                                       min_hw=(20, 24), max_hw=(28, 32)))
    synthetic.write_voc(tmp_path / "VOCdevkit", exs, {
        "train": voc_train, "val": voc_val, "trainval": voc_train + voc_val})
    sbd_exs = list(synthetic.make_examples(_names("b", 3), seed=6, min_hw=(20, 24),
                                           max_hw=(28, 32), boundaries=False))
    # a_0000 is in both (same image, as in the real releases): VOC's label wins.
    sbd = synthetic.write_sbd(tmp_path / "benchmark_RELEASE" / "dataset",
                              sbd_exs + exs[:1], _names("b", 2) + ["a_0000"], ["b_0002"])
    listed = voc.list_examples(tmp_path / "VOCdevkit", "train_aug", sbd_dir=sbd)
    assert [e.name for e in listed] == sorted(voc_train + _names("b", 3))
    kinds = {decode.inspect_label(e.label_path)[0] for e in listed}
    assert kinds == {decode.LabelKind.COLOUR, decode.LabelKind.PYTHON}
    ds = make_dataset(tmp_path / "VOCdevkit", "train_aug", sbd_dir=sbd,
                      training=False, batch_size=1)
    got = [lab[0].numpy() for _, lab in ds]
    assert len(got) == len(listed)
    for e, lab in zip(listed, got):
        np.testing.assert_array_equal(lab, decode.read_label(e.label_path), err_msg=e.name)
