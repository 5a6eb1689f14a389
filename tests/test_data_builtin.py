"""The built-in dataset: layout, determinism, labels, atomic generation."""

import filecmp
import json
import time

import numpy as np
import pytest
from PIL import Image

from deeplab_keras.data import builtin
from deeplab_keras.palette import VOC_PALETTE


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_generate_is_deterministic_for_a_seed(tmp_path):
    a = builtin.generate(tmp_path / "a", num_train=4, num_val=2, seed=3)
    b = builtin.generate(tmp_path / "b", num_train=4, num_val=2, seed=3)
    c = builtin.generate(tmp_path / "c", num_train=4, num_val=2, seed=4)
    assert _files(a) == _files(b)
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in _files(a)],
                                               shallow=False)
    assert not mismatch and not errors and len(match) == 6 * 2 + 3 + 1
    jpg = "VOC2012/JPEGImages/builtin_000000.jpg"
    assert (a / jpg).read_bytes() != (c / jpg).read_bytes()


def test_layout_and_labels(tmp_path):
    root = builtin.generate(tmp_path / "d", num_train=6, num_val=3, seed=0)
    voc = root / "VOC2012"
    lists = {s: (voc / "ImageSets" / "Segmentation" / f"{s}.txt").read_text().split()
             for s in ("train", "val", "trainval")}
    assert len(lists["train"]) == 6 and len(lists["val"]) == 3
    assert lists["trainval"] == lists["train"] + lists["val"]
    seen = set()
    for name in lists["trainval"]:
        im = Image.open(voc / "JPEGImages" / f"{name}.jpg")
        lab = Image.open(voc / "SegmentationClass" / f"{name}.png")
        assert im.format == "JPEG" and im.mode == "RGB"
        assert lab.format == "PNG" and lab.mode == "P"
        pal = np.asarray(lab.getpalette(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(pal[:256], VOC_PALETTE[:len(pal)])
        assert im.size == lab.size
        w, h = im.size
        assert 160 <= w <= 240 and 120 <= h <= 180
        arr = np.asarray(lab)
        vals = set(np.unique(arr).tolist())
        assert vals <= set(range(builtin.NUM_CLASSES)) | {255}
        seen |= vals
        # Every object is outlined by 255, so no foreground pixel touches
        # background directly (4-neighbourhood).
        fg, bg = (arr > 0) & (arr < 255), arr == 0
        assert not (fg[:, 1:] & bg[:, :-1]).any() and not (fg[1:] & bg[:-1]).any()
    assert {0, 255} <= seen and len(seen - {0, 255}) >= 3
    info = json.loads((root / builtin.INFO_FILE).read_text())
    assert info["class_names"] == list(builtin.CLASS_NAMES)


def test_ensure_builtin_generates_once_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv(builtin.ENV_VAR, str(tmp_path / "env_root"))
    # A smaller copy keeps the test fast; the full size (300 + 100) is timed in
    # benchmarks/bench_pipeline.py.
    monkeypatch.setattr(builtin, "NUM_TRAIN", 12)
    monkeypatch.setattr(builtin, "NUM_VAL", 4)
    assert builtin.default_root() == tmp_path / "env_root"
    t = time.perf_counter()
    root = builtin.ensure_builtin()
    gen_s = time.perf_counter() - t
    assert root == tmp_path / "env_root"
    assert len(list((root / "VOC2012" / "JPEGImages").glob("*.jpg"))) == (
        builtin.NUM_TRAIN + builtin.NUM_VAL)
    assert gen_s < 10, f"generation of 16 images took {gen_s:.1f} s"
    stamp = (root / builtin.INFO_FILE).stat().st_mtime_ns
    assert builtin.ensure_builtin() == root
    assert (root / builtin.INFO_FILE).stat().st_mtime_ns == stamp  # not regenerated
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_ensure_builtin_replaces_an_older_version(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "NUM_TRAIN", 2)
    monkeypatch.setattr(builtin, "NUM_VAL", 1)
    root = builtin.ensure_builtin(tmp_path / "old")
    info = json.loads((root / builtin.INFO_FILE).read_text())
    info["version"] = builtin.VERSION - 1
    (root / builtin.INFO_FILE).write_text(json.dumps(info))
    (root / "VOC2012" / "JPEGImages" / "stale.jpg").write_bytes(b"old")
    assert builtin.ensure_builtin(root) == root
    assert json.loads((root / builtin.INFO_FILE).read_text())["version"] == builtin.VERSION
    assert not (root / "VOC2012" / "JPEGImages" / "stale.jpg").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ensure_builtin_refuses_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a deeplab_keras built-in dataset"):
        builtin.ensure_builtin(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_train=0"):
        builtin.generate(tmp_path / "x", num_train=0)
    with pytest.raises(ValueError, match="seed=-1"):
        builtin.generate(tmp_path / "x", seed=-1)
    (tmp_path / "y").mkdir()
    with pytest.raises(FileExistsError):
        builtin.generate(tmp_path / "y", num_train=1, num_val=1)
