"""Your own data (deeplab_keras.data.custom): the three layouts written on disk in
their real formats, every label checked exactly after the pipeline, and bad input."""

import numpy as np
import pytest
from PIL import Image

from deeplab_keras.data import custom, make_dataset
from deeplab_keras.data.decode import DataError

H, W = 24, 32

# CamVid's class_dict.csv (a subset, real names and colours, with Void).
CAMVID_ROWS = [("Animal", (64, 128, 64)), ("Bicyclist", (0, 128, 192)),
               ("Building", (128, 0, 0)), ("Car", (64, 0, 128)),
               ("Void", (0, 0, 0))]
# CVAT "Segmentation mask 1.1" labelmap.txt.
CVAT_ROWS = [("background", (0, 0, 0)), ("cat", (250, 50, 83)), ("dog", (61, 245, 61)),
             ("person", (255, 204, 51))]


def _ids(seed, num_values, ignore=None):
    """A label map with blocks of every class (so that each class is present)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, num_values, size=(H // 4, W // 4))
    ids.flat[:num_values] = np.arange(num_values)
    ids = np.kron(ids, np.ones((4, 4), np.int64)).astype(np.uint8)
    if ignore is not None:
        ids[0, :5] = ignore
    return ids


def _image(seed):
    return np.random.default_rng(100 + seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _save_image(path, seed, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_image(seed)).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _save_rgb_mask(path, rows_ids, colours):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(colours, np.uint8)[rows_ids]).save(path)


def _labels(data_dir, split, **kwargs):
    ds = make_dataset(data_dir, split, training=False, batch_size=1, return_names=True,
                      **kwargs)
    return {n.numpy()[0].decode(): y.numpy()[0] for _, y, n in ds}


def _folders(root, n=6, lists=True):
    """images/*.jpg + masks/*.png (8-bit grey, value = class id, 255 = ignore)."""
    want = {}
    for i in range(n):
        stem = f"img_{i:03d}"
        _save_image(root / "images" / f"{stem}.jpg", i, "JPEG")
        ids = _ids(i, 3, ignore=255)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids, "L").save(root / "masks" / f"{stem}.png")
        want[stem] = ids
    if lists:
        (root / "train.txt").write_text("".join(f"img_{i:03d}\n" for i in range(n - 2)))
        (root / "val.txt").write_text("".join(f"img_{i:03d}.jpg\n" for i in range(n - 2, n)))
    return want


def _cvat(root, n=5, palette_mask=False):
    """CVAT 'Segmentation mask 1.1': JPEGImages/, SegmentationClass/ (RGB colour
    PNGs), ImageSets/Segmentation/default.txt, labelmap.txt."""
    (root / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\n"
        + "".join(f"{name}:{r},{g},{b}::\n" for name, (r, g, b) in CVAT_ROWS))
    colours = [c for _, c in CVAT_ROWS]
    want = {}
    for i in range(n):
        stem = f"frame_{i:06d}"
        _save_image(root / "JPEGImages" / f"{stem}.jpg", i, "JPEG")
        ids = _ids(i, len(CVAT_ROWS))
        path = root / "SegmentationClass" / f"{stem}.png"
        if palette_mask and i % 2:
            path.parent.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(ids, "P")
            im.putpalette([v for c in colours for v in c])
            im.save(path)
        else:
            _save_rgb_mask(path, ids, colours)
        want[stem] = ids
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "default.txt").write_text("".join(f"frame_{i:06d}\n" for i in range(n)))
    return want


def _camvid(root, per_split=(3, 2, 1)):
    """CamVid: train/ val/ test/ PNG images, *_labels/<stem>_L.png, class_dict.csv."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "class_dict.csv", "w") as f:
        f.write("name,r,g,b\n")
        for name, (r, g, b) in CAMVID_ROWS:
            f.write(f"{name},{r},{g},{b}\n")
    colours = [c for _, c in CAMVID_ROWS]
    void = len(CAMVID_ROWS) - 1
    want = {}
    k = 0
    for split, n in zip(("train", "val", "test"), per_split):
        for i in range(n):
            stem = f"0001TP_{k:06d}"
            _save_image(root / split / f"{stem}.png", k, "PNG")
            rows = _ids(k, len(CAMVID_ROWS))
            _save_rgb_mask(root / f"{split}_labels" / f"{stem}_L.png", rows, colours)
            want[(split, stem)] = np.where(rows == void, 255, rows).astype(np.uint8)
            k += 1
    return want


# ---------------------------------------------------------------------------
# The three layouts, labels exact

def test_folders_with_lists_labels_exact(tmp_path):
    want = _folders(tmp_path)
    ds = custom.open_dataset(tmp_path)
    assert ds.layout == "folders"
    assert ds.num_classes == 3 and ds.class_names == ("class_0", "class_1", "class_2")
    assert [e.name for e in ds.examples("train")] == [f"img_{i:03d}" for i in range(4)]
    for split in ("train", "val"):
        got = _labels(tmp_path, split)
        assert sorted(got) == sorted(e.name for e in ds.examples(split))
        for name, lab in got.items():
            np.testing.assert_array_equal(lab, want[name])
    assert (want["img_000"] == 255).any()


def test_folders_seeded_split_and_subfolders(tmp_path):
    _folders(tmp_path / "a", n=10, lists=False)
    a = custom.open_dataset(tmp_path / "a")
    b = custom.open_dataset(tmp_path / "a")
    assert len(a.examples("train")) == 9 and len(a.examples("val")) == 1
    assert [e.name for e in a.examples("val")] == [e.name for e in b.examples("val")]
    assert "seed 0" in a.split_note and "90/10" in a.split_note
    names = {e.name for e in a.examples("train")} | {e.name for e in a.examples("val")}
    assert len(names) == 10

    # images/train + masks/train subfolders, with a CamVid-style class table.
    root = tmp_path / "b"
    for split, seeds in (("train", (0, 1)), ("val", (2,))):
        for s in seeds:
            _save_image(root / "images" / split / f"x{s}.png", s, "PNG")
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_ids(s, 2), "L").save(root / "masks" / split / f"x{s}.png")
    (root / "classes.txt").write_text("road\ncar\n")
    ds = custom.open_dataset(root)
    assert ds.layout == "folders" and ds.class_names == ("road", "car")
    assert {k: [e.name for e in v] for k, v in ds.splits.items()} == {
        "train": ["x0", "x1"], "val": ["x2"]}
    np.testing.assert_array_equal(_labels(root, "val")["x2"], _ids(2, 2))


@pytest.mark.parametrize("palette_mask", [False, True])
def test_cvat_export_labels_exact(tmp_path, palette_mask):
    want = _cvat(tmp_path, palette_mask=palette_mask)
    ds = custom.open_dataset(tmp_path)
    assert ds.layout == "voc_export"
    assert ds.class_names == tuple(n for n, _ in CVAT_ROWS)
    np.testing.assert_array_equal(ds.class_colors, [c for _, c in CVAT_ROWS])
    # default.txt only: the stated seeded split.
    assert len(ds.examples("train")) == 4 and len(ds.examples("val")) == 1
    got = {**_labels(tmp_path, "train"), **_labels(tmp_path, "val")}
    assert sorted(got) == sorted(want)
    for name, lab in got.items():
        np.testing.assert_array_equal(lab, want[name])
        np.testing.assert_array_equal(
            ds.read_label(tmp_path / "SegmentationClass" / f"{name}.png"), want[name])


def test_voc_export_with_split_lists_and_roboflow_classes_csv(tmp_path):
    # Label Studio / Roboflow VOC-like export: index masks and _classes.csv.
    for i in range(3):
        _save_image(tmp_path / "JPEGImages" / f"p{i}.jpg", i, "JPEG")
        (tmp_path / "SegmentationClass").mkdir(exist_ok=True)
        Image.fromarray(_ids(i, 3) * 2, "L").save(tmp_path / "SegmentationClass" / f"p{i}.png")
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("p0\np1\n")
    (sets / "val.txt").write_text("p2\n")
    (tmp_path / "_classes.csv").write_text("Pixel Value, Class\n0, background\n2, leaf\n"
                                           "4, lesion\n")
    ds = custom.open_dataset(tmp_path)
    assert ds.class_names == ("background", "leaf", "lesion")
    assert [e.name for e in ds.examples("train")] == ["p0", "p1"]
    np.testing.assert_array_equal(_labels(tmp_path, "val")["p2"], _ids(2, 3))


def test_camvid_labels_exact_void_ignored(tmp_path):
    want = _camvid(tmp_path)
    ds = custom.open_dataset(tmp_path)
    assert ds.layout == "camvid"
    assert ds.class_names == ("Animal", "Bicyclist", "Building", "Car")
    assert ds.table.ignored == ("Void",)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 3, "val": 2, "test": 1}
    for split in ("train", "val", "test"):
        got = _labels(tmp_path, split)
        assert len(got) == len(ds.examples(split))
        for name, lab in got.items():
            np.testing.assert_array_equal(lab, want[(split, name)])
            assert (lab == 255).any()


def test_training_batches_keep_labels_nearest(tmp_path):
    """Random scale + crop: every label value is still a class id or 255."""
    _camvid(tmp_path)
    ds = make_dataset(tmp_path, "train", training=True, batch_size=3, crop_size=16, seed=0,
                      scale_range=(0.6, 1.7))
    images, labels = next(iter(ds))
    assert images.shape == (3, 16, 16, 3) and labels.shape == (3, 16, 16)
    assert set(np.unique(labels.numpy())) <= {0, 1, 2, 3, 255}


# ---------------------------------------------------------------------------
# Class frequencies and weights

def test_frequency_report_and_weights(tmp_path):
    root = tmp_path
    masks = [np.array([[0, 0, 0, 1]] * 2, np.uint8), np.array([[0, 2, 2, 255]] * 2, np.uint8)]
    for i, m in enumerate(masks):
        _save_image(root / "images" / f"m{i}.png", i, "PNG")
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(root / "images" / f"m{i}.png")
        Image.fromarray(m, "L").save(root / "masks" / f"m{i}.png")
    (root / "train.txt").write_text("m0\nm1\n")
    ds = custom.open_dataset(root)
    rep = custom.frequency_report(ds, "train")
    np.testing.assert_array_equal(rep.pixels, [8, 2, 4])
    assert rep.ignored == 2 and rep.num_images == 2
    np.testing.assert_array_equal(rep.images_with, [2, 1, 1])
    np.testing.assert_array_equal(rep.image_pixels_with, [14, 8, 6])
    f = np.array([8, 2, 4]) / 14
    np.testing.assert_allclose(custom.class_weights(rep, "inverse_frequency"), 1 / (3 * f))
    freq = np.array([8 / 14, 2 / 8, 4 / 6])
    np.testing.assert_allclose(custom.class_weights(rep, "median_frequency"),
                               np.median(freq) / freq)
    np.testing.assert_array_equal(custom.class_weights(rep, "none"), [1, 1, 1])
    np.testing.assert_array_equal(custom.class_weights(rep, [1, 2, 0.5]), [1, 2, 0.5])
    with pytest.raises(ValueError, match="3 finite numbers"):
        custom.class_weights(rep, [1, 2])
    text = rep.table()
    assert "class_0" in text and "57.14%" in text
    assert custom.dominance_warning(rep) is None


def test_dominance_warning(tmp_path):
    for i in range(2):
        _save_image(tmp_path / "images" / f"a{i}.png", i, "PNG")
        m = np.zeros((H, W), np.uint8)
        m[0, 0] = 1
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(m, "L").save(tmp_path / "masks" / f"a{i}.png")
    ds = custom.open_dataset(tmp_path)
    msg = custom.dominance_warning(custom.frequency_report(ds, "train"))
    assert "'class_0' covers 99.9%" in msg and "--class-weights median_frequency" in msg


# ---------------------------------------------------------------------------
# Bad input

def test_image_without_mask_and_mask_without_image(tmp_path):
    _folders(tmp_path / "a", n=3, lists=False)
    (tmp_path / "a" / "masks" / "img_001.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) without a mask .*img_001\.jpg"):
        custom.open_dataset(tmp_path / "a")
    _folders(tmp_path / "b", n=3, lists=False)
    (tmp_path / "b" / "images" / "img_002.jpg").unlink()
    with pytest.raises(DataError, match=r"1 mask\(s\) without an image .*img_002\.png"):
        make_dataset(tmp_path / "b", "train", training=False, batch_size=1)
    _camvid(tmp_path / "c")
    (tmp_path / "c" / "val_labels" / "0001TP_000003_L.png").unlink()
    with pytest.raises(DataError, match="0001TP_000003.png"):
        custom.open_dataset(tmp_path / "c")


def test_size_mismatch(tmp_path):
    _folders(tmp_path, n=4)
    Image.fromarray(np.zeros((H, W + 1), np.uint8), "L").save(tmp_path / "masks" / "img_001.png")
    with pytest.raises(DataError, match=rf"sizes differ: .*img_001\.jpg is {H}x{W}, "
                                        rf".*img_001\.png is {H}x{W + 1}"):
        make_dataset(tmp_path, "train", training=True, batch_size=1, crop_size=8)


def test_unknown_colours(tmp_path):
    _cvat(tmp_path, n=3)
    path = tmp_path / "SegmentationClass" / "frame_000001.png"
    rgb = np.asarray(Image.open(path)).copy()
    rgb[:2, :3] = (9, 8, 7)
    Image.fromarray(rgb).save(path)
    ds = custom.open_dataset(tmp_path)
    with pytest.raises(DataError, match=r"frame_000001\.png has 6 pixels whose colour is not "
                                        r"in the class table .*\(9, 8, 7\): 6 px.*"
                                        "--unknown-color ignore"):
        ds.read_label(path)
    with pytest.raises(DataError, match=r"\(9, 8, 7\): 6 px"):
        custom.frequency_report(ds, "train" if any(
            e.label_path == str(path) for e in ds.examples("train")) else "val")
    import tensorflow as tf
    split = next(s for s in ds.splits if any(e.label_path == str(path)
                                              for e in ds.examples(s)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)frame_000001\.png.*6"):
        _labels(tmp_path, split)
    got = _labels(tmp_path, split, unknown_color="ignore")["frame_000001"]
    want = _ids(1, len(CVAT_ROWS))
    want[:2, :3] = 255
    np.testing.assert_array_equal(got, want)


def test_empty_folders(tmp_path):
    with pytest.raises(DataError, match="is an empty folder"):
        custom.open_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"No images found in .*images"):
        make_dataset(tmp_path, "train", training=True, batch_size=1)
    (tmp_path / "masks").rmdir()
    _save_image(tmp_path / "images" / "a.jpg", 0, "JPEG")
    with pytest.raises(DataError, match=r"has no mask folder .*masks"):
        custom.open_dataset(tmp_path)


def test_class_table_with_duplicate_colour(tmp_path):
    _camvid(tmp_path)
    (tmp_path / "class_dict.csv").write_text("name,r,g,b\nRoad,128,64,128\nSky,128,128,128\n"
                                             "Sidewalk,128,64,128\n")
    with pytest.raises(DataError, match=r"class_dict\.csv:4: colour \(128, 64, 128\) of class "
                                        r"'Sidewalk' is also the colour of 'Road' \(line 2\)"):
        custom.open_dataset(tmp_path)


def test_num_classes_mismatch_and_bad_options(tmp_path):
    _camvid(tmp_path)
    with pytest.raises(ValueError, match=r"num_classes=5 does not match .* has 4 classes "
                                         r"\(Animal, Bicyclist, Building, Car\)"):
        make_dataset(tmp_path, "train", training=True, batch_size=1, num_classes=5)
    with pytest.raises(ValueError, match="unknown_color"):
        custom.open_dataset(tmp_path, unknown_color="skip")
    with pytest.raises(ValueError, match="Split 'valid'"):
        make_dataset(tmp_path, "valid", training=False, batch_size=1)


def test_rgb_masks_without_table_and_jpeg_masks(tmp_path):
    _save_image(tmp_path / "images" / "a.jpg", 0, "JPEG")
    _save_rgb_mask(tmp_path / "masks" / "a.png", _ids(0, 2), [(0, 0, 0), (255, 0, 0)])
    with pytest.raises(DataError, match=r"a\.png is an RGB colour mask but the dataset has "
                                        "no colour table"):
        make_dataset(tmp_path, "train", training=True, batch_size=1)
    (tmp_path / "masks" / "a.png").unlink()
    Image.fromarray(_ids(0, 2) * 255).save(tmp_path / "masks" / "a.jpg", quality=95)
    with pytest.raises(DataError, match=r"a\.jpg is not a PNG"):
        custom.open_dataset(tmp_path)


def test_roboflow_semantic_segmentation_masks(tmp_path):
    """Roboflow 'Semantic Segmentation Masks': train/ valid/ with <stem>_mask.png
    beside each image and _classes.csv (Pixel Value, Class)."""
    want = {}
    for split, seeds in (("train", (0, 1)), ("valid", (2,))):
        d = tmp_path / split
        d.mkdir()
        (d / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, crack\n")
        for s in seeds:
            stem = f"img{s}_jpg.rf.{s:032x}"
            _save_image(d / f"{stem}.jpg", s, "JPEG")
            Image.fromarray(_ids(s, 2), "L").save(d / f"{stem}_mask.png")
            want[stem] = _ids(s, 2)
    ds = custom.open_dataset(tmp_path)
    assert ds.layout == "roboflow" and ds.class_names == ("background", "crack")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 2, "val": 1}
    got = {**_labels(tmp_path, "train"), **_labels(tmp_path, "val")}
    assert sorted(got) == sorted(want)
    for name, lab in got.items():
        np.testing.assert_array_equal(lab, want[name])


def test_palette_index_masks_without_table_take_the_palette_colours(tmp_path):
    palette = [(0, 0, 0), (10, 200, 30), (250, 120, 0)]
    for i in range(3):
        _save_image(tmp_path / "images" / f"p{i}.png", i, "PNG")
        im = Image.fromarray(_ids(i, 3, ignore=255), "P")
        im.putpalette([v for c in palette for v in c] + [0] * (3 * 252) + [255, 255, 255])
        (tmp_path / "masks").mkdir(exist_ok=True)
        im.save(tmp_path / "masks" / f"p{i}.png")
    (tmp_path / "train.txt").write_text("p0\np1\np2\n")
    ds = custom.open_dataset(tmp_path)
    assert ds.num_classes == 3
    np.testing.assert_array_equal(ds.class_colors, palette)
    got = _labels(tmp_path, "train")
    for i in range(3):
        np.testing.assert_array_equal(got[f"p{i}"], _ids(i, 3, ignore=255))


def test_on_error_skip_and_validate_full(tmp_path):
    _folders(tmp_path, n=6)
    Image.fromarray(np.zeros((H, W + 1), np.uint8), "L").save(tmp_path / "masks" / "img_001.png")
    ds = make_dataset(tmp_path, "train", training=False, batch_size=1, on_error="skip",
                      return_names=True)
    assert sorted(n.numpy()[0].decode() for _, _, n in ds) == ["img_000", "img_002", "img_003"]
    # validate="full" decodes every mask up front: a value not in the table fails at
    # build time (without a table, 7 would make it an 8-class dataset).
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    Image.fromarray(np.full((H, W), 7, np.uint8), "L").save(tmp_path / "masks" / "img_001.png")
    with pytest.raises(DataError, match=r"img_001\.png has 768 pixels whose value is not in"):
        make_dataset(tmp_path, "train", training=False, batch_size=1, validate="full")
