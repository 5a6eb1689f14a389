"""Reliability of the data readers and pipeline on bad or unusual inputs (issue 8).

Policy under test (deeplab_keras/data/decode.py): header problems are found by
a pre-scan when the dataset is built and raise `DataError` (a ValueError) naming
the file; pixel-level problems (label values, colours, sizes of .mat labels)
are tf.debugging assertions inside the map, whose InvalidArgumentError message
names the file. `on_error="skip"` drops bad examples instead.
"""

import io
import json
import logging
import tracemalloc
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_keras.data import builtin, decode, make_dataset, synthetic, voc
from deeplab_keras.data.decode import DataError
from deeplab_keras.palette import VOC_PALETTE
from tests.helpers import png_bytes

H, W = 12, 16


def _label(seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 21, (H, W)).astype(np.uint8)
    lab[0] = 255
    return lab


def _image(seed=0, h=H, w=W):
    return np.random.default_rng(seed + 100).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _png(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def make_voc(root, items, val=()):
    """items: {name: (image bytes or None, label bytes or None)}; None = file absent."""
    voc2012 = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc2012 / d).mkdir(parents=True, exist_ok=True)
    for name, (img, lab) in items.items():
        if img is not None:
            (voc2012 / "JPEGImages" / f"{name}.jpg").write_bytes(img)
        if lab is not None:
            (voc2012 / "SegmentationClass" / f"{name}.png").write_bytes(lab)
    train = [n for n in items if n not in val]
    for split, names in (("train", train), ("val", list(val)), ("trainval", list(items))):
        (voc2012 / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "".join(n + "\n" for n in names))
    return root / "VOCdevkit"


def good(seed=0):
    return synthetic.jpeg_bytes(_image(seed)), synthetic.palette_png_bytes(_label(seed))


def eval_all(root, **kw):
    ds = make_dataset(root, "train", training=False, batch_size=1, return_names=True, **kw)
    return [(x.numpy()[0], y.numpy()[0], n.numpy()[0].decode()) for x, y, n in ds]


def raw_rgb(x):
    from deeplab_keras.preprocessing import deprocess_images

    return np.rint(deprocess_images(x)).astype(np.int32)


class TestImages:
    def test_truncated_jpeg_is_named(self, tmp_path):
        img, lab = good()
        root = make_voc(tmp_path, {"ok": good(1), "cut": (img[: len(img) // 2], lab)})
        with pytest.raises(DataError, match=r"truncated.*cut\.jpg"):
            make_dataset(root, "train", training=True, batch_size=1, crop_size=8)

    def test_truncated_jpeg_skipped_and_counted(self, tmp_path, caplog):
        img, lab = good()
        root = make_voc(tmp_path, {"ok": good(1), "cut": (img[: len(img) // 2], lab)})
        with caplog.at_level(logging.WARNING):
            got = eval_all(root, on_error="skip")
        assert [n for *_, n in got] == ["ok"]
        assert "Skipped 1 of 2" in caplog.text and "cut.jpg" in caplog.text

    def test_corrupt_jpeg_data_with_end_marker(self, tmp_path):
        # Entropy-coded data damaged, end-of-image marker intact: the header
        # pre-scan cannot see it (JPEG has no checksum).
        # (A stray marker in the scan data makes libjpeg fail; plain bit flips
        # may decode to wrong pixels, undetectable without a checksum.)
        img = bytearray(synthetic.jpeg_bytes(_image(h=64, w=80)))
        img[len(img) // 3: len(img) // 3 + 2] = b"\xff\x87"
        lab = synthetic.palette_png_bytes(np.zeros((64, 80), np.uint8))
        root = make_voc(tmp_path, {"ok": good(1), "bad": (bytes(img), lab)})
        # Default: TensorFlow's decoder fails (its message does not name the file).
        with pytest.raises(tf.errors.InvalidArgumentError, match="jpeg::Uncompress failed"):
            eval_all(root)
        # validate="full" finds it before training, by name.
        with pytest.raises(DataError, match=r"corrupt or unreadable.*bad\.jpg"):
            make_dataset(root, "train", training=True, batch_size=1, validate="full")
        # on_error="skip" drops it.
        assert [n for *_, n in eval_all(root, on_error="skip")] == ["ok"]

    def test_text_file_named_jpg(self, tmp_path):
        root = make_voc(tmp_path, {"txt": (b"just some notes\n" * 10, good()[1])})
        with pytest.raises(DataError, match=r"not a readable image.*txt\.jpg"):
            make_dataset(root, "train", training=False, batch_size=1)

    def test_truncated_png_image(self, tmp_path):
        data = _png(_image())
        root = make_voc(tmp_path, {"p": (data[:-30], good()[1])})
        with pytest.raises(DataError, match=r"PNG is truncated.*p\.jpg"):
            make_dataset(root, "train", training=False, batch_size=1)

    @pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
    def test_grayscale_image_becomes_rgb(self, tmp_path, fmt):
        grey = _image()[..., 0]
        buf = io.BytesIO()
        Image.fromarray(grey, "L").save(buf, format=fmt, quality=100)
        root = make_voc(tmp_path, {"g": (buf.getvalue(), good()[1])})
        (x, y, _), = eval_all(root)
        rgb = raw_rgb(x)
        assert rgb.shape == (H, W, 3)
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
        np.testing.assert_array_equal(rgb[..., 1], rgb[..., 2])
        if fmt == "PNG":
            np.testing.assert_array_equal(rgb[..., 0], grey)

    def test_rgba_png_alpha_dropped(self, tmp_path):
        rgb = _image()
        rgba = np.concatenate([rgb, np.full((H, W, 1), 9, np.uint8)], -1)
        root = make_voc(tmp_path, {"a": (_png(rgba, "RGBA"), good()[1])})
        (x, _, _), = eval_all(root)
        np.testing.assert_array_equal(raw_rgb(x), rgb)

    def test_16bit_png_reduced_to_8bit(self, tmp_path):
        v16 = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 300)
        root = make_voc(tmp_path, {"s": (_png(v16), good()[1])})
        (x, _, _), = eval_all(root)
        np.testing.assert_array_equal(raw_rgb(x)[..., 0], v16 >> 8)

    def test_cmyk_jpeg_decodes_to_rgb(self, tmp_path):
        yy, xx = np.mgrid[0:H, 0:W]  # smooth, so decoder rounding stays small
        rgb = np.stack([yy * 20, xx * 15, 255 - xx * 10], -1).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG", quality=100)
        root = make_voc(tmp_path, {"c": (buf.getvalue(), good()[1])})
        (x, _, _), = eval_all(root)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.int32)
        assert np.abs(raw_rgb(x) - ref).max() <= 6
        assert np.abs(raw_rgb(x) - rgb).max() <= 6  # not inverted (Adobe CMYK)

    def test_one_pixel_image(self, tmp_path):
        img = synthetic.jpeg_bytes(np.full((1, 1, 3), 200, np.uint8))
        lab = synthetic.palette_png_bytes(np.full((1, 1), 7, np.uint8))
        root = make_voc(tmp_path, {"one": (img, lab)})
        (x, y, _), = eval_all(root)
        assert x.shape == (1, 1, 3) and y.tolist() == [[7]]
        ds = make_dataset(root, "train", training=True, batch_size=1, crop_size=9, seed=0)
        for _, y in ds:
            vals = np.unique(y.numpy())
            assert set(vals.tolist()) <= {7, 255} and (y.numpy() == 255).sum() >= 9 * 9 - 4

    def test_very_large_image_refused_without_decoding(self, tmp_path):
        # A valid 10000x10000 RGB PNG header; the pixel data is never read.
        png = png_bytes(10000, 10000, zlib.compress(b"\x00" * 100), color_type=2)
        root = make_voc(tmp_path, {"huge": (png, good()[1])})
        tracemalloc.start()
        with pytest.raises(DataError, match=r"10000x10000.*max_image_pixels.*huge\.jpg"):
            make_dataset(root, "train", training=True, batch_size=1)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 50 * 2**20  # 10000x10000x3 would be 300 MB

    def test_decompression_bomb_size_refused(self, tmp_path):
        # 30000x30000 is past PIL's own bomb limit, which raises on open.
        png = png_bytes(30000, 30000, zlib.compress(b"\x00" * 100), color_type=0)
        root = make_voc(tmp_path, {"bomb": (png, good()[1])})
        with pytest.raises(DataError, match=r"too large.*bomb\.jpg"):
            make_dataset(root, "train", training=True, batch_size=1)

    def test_exif_rotated_jpeg_uses_stored_pixels(self, tmp_path):
        # The stored pixels are 12x16 (aligned with the label); EXIF says rotate
        # 90 degrees. Policy: ignore EXIF for image and label alike.
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[:, : W // 2] = (250, 10, 10)
        lab = np.zeros((H, W), np.uint8)
        lab[:, : W // 2] = 1
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 CW
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=100, exif=exif.tobytes())
        root = make_voc(tmp_path, {"rot": (buf.getvalue(), synthetic.palette_png_bytes(lab))})
        assert Image.open(io.BytesIO(buf.getvalue())).getexif()[0x0112] == 6
        (x, y, _), = eval_all(root)
        assert x.shape == (H, W, 3)
        red = raw_rgb(x)[..., 0] > 128
        np.testing.assert_array_equal(red, y == 1)


class TestLabels:
    def test_rgb_coloured_label_decoded_by_voc_colour_map(self, tmp_path):
        lab = _label()
        root = make_voc(tmp_path, {"c": (good()[0], _png(VOC_PALETTE[lab], "RGB"))})
        assert decode.inspect_label(
            root / "VOC2012" / "SegmentationClass" / "c.png")[0] == decode.LabelKind.COLOUR
        (_, y, _), = eval_all(root)
        np.testing.assert_array_equal(y, lab)

    def test_rgb_label_with_unknown_colour_is_named(self, tmp_path):
        rgb = VOC_PALETTE[_label()].copy()
        rgb[3, 3] = (1, 2, 3)
        root = make_voc(tmp_path, {"odd": (good()[0], _png(rgb, "RGB"))})
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"not in the VOC colour map.*odd\.png"):
            eval_all(root)

    def test_out_of_range_label_is_named(self, tmp_path):
        lab = _label()
        lab[2, 2] = 30
        root = make_voc(tmp_path, {"ok": good(1), "bad": (good()[0], _png(lab, "L"))})
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"outside \[0, 21\).*bad\.png.*30"):
            eval_all(root)
        with pytest.raises(DataError, match=r"outside \[0, 21\).*bad\.png.*\[30\]"):
            make_dataset(root, "train", training=False, batch_size=1, validate="full")

    def test_out_of_range_label_skipped(self, tmp_path):
        lab = _label()
        lab[2, 2] = 30
        root = make_voc(tmp_path, {"ok": good(1), "bad": (good()[0], _png(lab, "L"))})
        assert [n for *_, n in eval_all(root, on_error="skip")] == ["ok"]
        assert [n for *_, n in eval_all(root, on_error="skip", validate="full")] == ["ok"]

    def test_num_classes_checked_against_labels(self, tmp_path):
        root = make_voc(tmp_path, {"a": good()})
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside \[0, 5\)"):
            eval_all(root, num_classes=5)

    def test_size_mismatch_is_named(self, tmp_path):
        img = synthetic.jpeg_bytes(_image(h=H + 1))
        root = make_voc(tmp_path, {"m": (img, good()[1])})
        with pytest.raises(DataError, match=r"sizes differ.*m\.jpg is 13x16.*m\.png is 12x16"):
            make_dataset(root, "train", training=True, batch_size=1)

    def test_size_mismatch_of_sbd_mat_label_is_named(self, tmp_path):
        root = make_voc(tmp_path, {"v": good(1)}, val=("v",))
        big = np.zeros((H + 2, W), np.uint8)
        sbd = synthetic.write_sbd(tmp_path / "benchmark_RELEASE" / "dataset",
                                  [("s", _image(), big)], ["s"], [])
        (root / "VOC2012" / "JPEGImages" / "s.jpg").write_bytes(good()[0])
        ds = make_dataset(root, "train_aug", training=True, batch_size=1, sbd_dir=sbd)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"sizes differ.*s\.mat"):
            list(ds)

    @pytest.mark.parametrize("mode", ["I;16", "RGBA", "LA", "1"])
    def test_unsupported_label_modes_rejected(self, tmp_path, mode):
        arr = _label().astype(np.uint16) if mode == "I;16" else _label()
        im = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        root = make_voc(tmp_path, {"x": (good()[0], buf.getvalue())})
        with pytest.raises(DataError, match=r"mode .* not supported.*x\.png"):
            make_dataset(root, "train", training=False, batch_size=1)

    def test_corrupt_label_png_is_named(self, tmp_path):
        lab = bytearray(_png(np.tile(np.arange(21, dtype=np.uint8), (30, 3)), "L"))
        lab[60] ^= 0xFF  # inside IDAT: its CRC no longer matches
        root = make_voc(tmp_path, {"c": (synthetic.jpeg_bytes(_image(h=30, w=63)), bytes(lab))})
        with pytest.raises(DataError, match=r"Label PNG is corrupt.*c\.png"):
            make_dataset(root, "train", training=False, batch_size=1)

    def test_jpeg_label_rejected(self, tmp_path):
        root = make_voc(tmp_path, {"j": (good()[0], synthetic.jpeg_bytes(_image()))})
        with pytest.raises(DataError, match=r"Label must be a PNG.*j\.png"):
            make_dataset(root, "train", training=False, batch_size=1)

    def test_palette_png_with_other_palette_uses_indices(self, tmp_path):
        lab = _label()
        im = Image.fromarray(lab, "P")
        im.putpalette([(i * 7) % 256 for i in range(768)])
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        root = make_voc(tmp_path, {"p": (good()[0], buf.getvalue())})
        path = root / "VOC2012" / "SegmentationClass" / "p.png"
        assert decode.inspect_label(path)[0] == decode.LabelKind.PYTHON
        (_, y, _), = eval_all(root)
        np.testing.assert_array_equal(y, lab)


class TestPaths:
    def test_missing_data_dir(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="Data directory not found"):
            make_dataset(tmp_path / "nope", "train", training=True, batch_size=1)

    def test_not_a_vocdevkit(self, tmp_path):
        # An empty folder is neither a VOCdevkit nor one of the own-data layouts:
        # the error names the folder and every layout it could have been.
        (tmp_path / "photos").mkdir()
        with pytest.raises(ValueError, match=r"photos is an empty folder.*images/ \+ masks/.*VOCdevkit"):
            make_dataset(tmp_path / "photos", "train", training=True, batch_size=1)

    def test_incomplete_vocdevkit_names_missing_subdir(self, tmp_path):
        (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
        with pytest.raises(FileNotFoundError, match=r"VOC2012/SegmentationClass is missing"):
            voc.list_examples(tmp_path / "VOCdevkit", "train")

    @pytest.mark.parametrize("which", ["image", "label"])
    def test_listed_but_missing_file(self, tmp_path, which):
        img, lab = good()
        item = (None, lab) if which == "image" else (img, None)
        root = make_voc(tmp_path, {"ok": good(1), "gone": item})
        with pytest.raises(DataError, match=r"not found: .*gone\.(jpg|png)"):
            make_dataset(root, "train", training=True, batch_size=1)
        assert len(eval_all(root, on_error="skip")) == 1

    def test_missing_split_list(self, tmp_path):
        root = make_voc(tmp_path, {"a": good()})
        (root / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
        with pytest.raises(FileNotFoundError, match=r"Split list not found: .*val\.txt"):
            make_dataset(root, "val", training=False, batch_size=1)

    def test_duplicate_names_in_list(self, tmp_path):
        root = make_voc(tmp_path, {"a": good()})
        (root / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").write_text("a\na\n")
        with pytest.raises(DataError, match="more than once"):
            make_dataset(root, "train", training=False, batch_size=1)

    def test_train_aug_without_sbd(self, tmp_path):
        root = make_voc(tmp_path, {"a": good()})
        with pytest.raises(ValueError, match="sbd_dir=None"):
            make_dataset(root, "train_aug", training=True, batch_size=1)

    def test_bad_sbd_dir(self, tmp_path):
        root = make_voc(tmp_path, {"a": good()})
        (tmp_path / "sbd").mkdir()
        with pytest.raises(FileNotFoundError, match=r"not an SBD directory.*dataset/cls"):
            make_dataset(root, "train_aug", training=True, batch_size=1,
                         sbd_dir=tmp_path / "sbd")


class TestConfigs:
    @pytest.mark.parametrize("kw,match", [
        (dict(split="test"), "split='test'"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(num_classes=0), "num_classes=0"),
        (dict(num_classes=256), "num_classes=256"),
        (dict(crop_size=-3), "crop_size=-3"),
        (dict(training=False, batch_size=2), "eval_pad_to=None"),
        (dict(on_error="ignore"), "on_error='ignore'"),
        (dict(validate="deep"), "validate='deep'"),
        (dict(scale_range=(1.5, 0.5)), r"scale_range=\(1.5, 0.5\)"),
        (dict(seed=1.5), "seed=1.5"),
        (dict(training="yes"), "training='yes'"),
    ])
    def test_bad_arguments_name_the_value(self, tmp_path, kw, match):
        root = make_voc(tmp_path, {"a": good()})
        args = dict(split="train", training=True, batch_size=1)
        args.update(kw)
        split = args.pop("split")
        with pytest.raises(ValueError, match=f"Received: .*{match}"):
            make_dataset(root, split, **args)


class TestNumbers:
    def test_eval_image_larger_than_pad_is_an_error(self, tmp_path):
        root = make_voc(tmp_path, {"wide": good()})
        ds = make_dataset(root, "train", training=False, batch_size=1, eval_pad_to=(20, 10))
        with pytest.raises(tf.errors.InvalidArgumentError, match="larger than eval_pad_to.*wide"):
            list(ds)

    def test_preprocessed_padding_is_exactly_zero(self, tmp_path):
        root = make_voc(tmp_path, {"a": good()})
        ds = make_dataset(root, "train", training=True, batch_size=1, crop_size=40,
                          scale_range=(1, 1), flip=False, seed=0)
        x, y = next(iter(ds))
        assert np.all(x.numpy()[0, H:] == 0.0) and np.all(y.numpy()[0, H:] == 255)
        assert np.all(x.numpy()[0, :, W:] == 0.0) and np.all(y.numpy()[0, :, W:] == 255)


class TestNothingLost:
    def test_eval_yields_every_example_once_in_order(self, tmp_path):
        items = {f"n{i}": good(i) for i in range(5)}
        root = make_voc(tmp_path, items)
        assert [n for *_, n in eval_all(root)] == list(items)

    def test_training_epoch_covers_every_example(self, tmp_path):
        items = {f"n{i}": good(i) for i in range(5)}
        root = make_voc(tmp_path, items)
        ds = make_dataset(root, "train", training=True, batch_size=2, crop_size=8, seed=1,
                          drop_remainder=False, return_names=True)
        names = [n.decode() for _, _, b in ds for n in b.numpy()]
        assert sorted(names) == sorted(items)

    def test_interrupted_generation_leaves_nothing(self, tmp_path, monkeypatch):
        def boom(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(synthetic, "write_voc", boom)
        with pytest.raises(KeyboardInterrupt):
            builtin.generate(tmp_path / "bi", num_train=2, num_val=1)
        assert list(tmp_path.iterdir()) == []

    def test_info_file_describes_contents(self, tmp_path):
        root = builtin.generate(tmp_path / "bi", num_train=2, num_val=1, seed=5)
        info = json.loads((root / builtin.INFO_FILE).read_text())
        assert (info["num_train"], info["num_val"], info["seed"]) == (2, 1, 5)
