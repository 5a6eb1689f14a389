"""The TFDS builder prepares from archives in the real formats and matches the raw reader."""

import tarfile

import numpy as np
import pytest

from deeplab_keras.data import decode, synthetic, voc

tfds = pytest.importorskip("tensorflow_datasets")
tfds.disable_progress_bar()


def _names(prefix, n, start=0):
    return [f"{prefix}_{i:04d}" for i in range(start, start + n)]


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """VOCtrainval_11-May-2012.tar and benchmark.tgz built like the real ones."""
    work = tmp_path_factory.mktemp("tfds_src")
    voc_train, voc_val = _names("2007", 3), _names("2007", 2, 3)
    exs = list(synthetic.make_examples(voc_train + voc_val, seed=11,
                                       min_hw=(20, 24), max_hw=(30, 36)))
    sbd_exs = list(synthetic.make_examples(_names("2008", 3) + ["2007_0000", "2007_0003"],
                                           seed=12, min_hw=(20, 24), max_hw=(30, 36),
                                           boundaries=False))
    synthetic.write_voc(work / "VOCdevkit", exs + [e for e in sbd_exs[:3]],
                        {"train": voc_train, "val": voc_val,
                         "trainval": voc_train + voc_val})
    # SBD-only names have no VOC label: remove those PNGs, keep their JPEGs.
    for name, _, _ in sbd_exs[:3]:
        (work / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{name}.png").unlink()
    synthetic.write_sbd(work / "benchmark_RELEASE" / "dataset", sbd_exs,
                        ["2008_0000", "2008_0001", "2007_0000"], ["2008_0002", "2007_0003"])
    manual = work / "manual"
    manual.mkdir()
    with tarfile.open(manual / "VOCtrainval_11-May-2012.tar", "w") as t:
        t.add(work / "VOCdevkit", arcname="VOCdevkit")
    with tarfile.open(manual / "benchmark.tgz", "w:gz") as t:
        t.add(work / "benchmark_RELEASE", arcname="benchmark_RELEASE")
    return work, manual


def _as_dict(ds):
    out = {}
    for ex in tfds.as_numpy(ds):
        out[ex["file_name"].decode()] = (ex["image"], ex["segmentation_mask"])
    return out


@pytest.mark.parametrize("config,splits", [("segmentation", ("train", "val")),
                                           ("train_aug", ("train_aug", "val"))])
def test_tfds_builder_matches_raw_reader(archives, tmp_path, config, splits):
    import tensorflow as tf

    from deeplab_keras.data.tfds_builder import Voc2012Segmentation

    work, manual = archives
    builder = Voc2012Segmentation(config=config, data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    seen = {}
    for split in splits:
        got = seen[split] = _as_dict(builder.as_dataset(split=split))
        sbd = work / "benchmark_RELEASE" if split == "train_aug" else None
        raw = voc.list_examples(work / "VOCdevkit", split, sbd_dir=sbd)
        assert sorted(got) == sorted(e.name for e in raw)
        assert builder.info.splits[split].num_examples == len(raw)
        for e in raw:
            image, mask = got[e.name]
            kind, _ = decode.inspect_label(e.label_path)
            want_label, _ = decode.decode_label_tf(tf.constant(e.label_path), int(kind))
            want_image = decode.decode_image_tf(tf.io.read_file(e.image_path))
            np.testing.assert_array_equal(mask[..., 0], want_label.numpy())
            np.testing.assert_array_equal(image, want_image.numpy())
    if config == "train_aug":
        assert "2007_0003" not in seen["train_aug"]  # VOC val, listed by SBD: excluded
        assert "2008_0002" in seen["train_aug"]  # SBD val, not in VOC: included


def test_tfds_dataset_equals_raw_pipeline(archives, tmp_path):
    from deeplab_keras.data import make_dataset, make_tfds_dataset

    work, manual = archives
    # No random draws (scale 1, no flip, crop larger than every image, so the
    # crop offset is 0): the training path must then give identical examples,
    # whatever order TFDS stores them in.
    kw = dict(training=True, batch_size=1, crop_size=40, num_classes=21, seed=5,
              return_names=True, scale_range=(1.0, 1.0), flip=False)
    raw = {n.numpy()[0]: (x.numpy(), y.numpy())
           for x, y, n in make_dataset(work / "VOCdevkit", "train", **kw)}
    via_tfds = {n.numpy()[0]: (x.numpy(), y.numpy()) for x, y, n in make_tfds_dataset(
        "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual), **kw)}
    assert sorted(raw) == sorted(via_tfds) and len(raw) == 3
    for k in raw:
        np.testing.assert_array_equal(raw[k][0], via_tfds[k][0])
        np.testing.assert_array_equal(raw[k][1], via_tfds[k][1])
    ev_raw = {n.numpy()[0]: (x.numpy(), y.numpy()) for x, y, n in make_dataset(
        work / "VOCdevkit", "val", training=False, batch_size=1, return_names=True)}
    ev_tfds = {n.numpy()[0]: (x.numpy(), y.numpy()) for x, y, n in make_tfds_dataset(
        "val", training=False, batch_size=1, data_dir=str(tmp_path / "tfds"),
        manual_dir=str(manual), return_names=True)}
    assert sorted(ev_raw) == sorted(ev_tfds)
    for k in ev_raw:
        np.testing.assert_array_equal(ev_raw[k][0], ev_tfds[k][0])
        np.testing.assert_array_equal(ev_raw[k][1], ev_tfds[k][1])


def test_missing_archive_message_names_files(tmp_path):
    from deeplab_keras.data.tfds_builder import Voc2012Segmentation

    builder = Voc2012Segmentation(config="segmentation", data_dir=str(tmp_path / "tfds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="VOCtrainval_11-May-2012.tar"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "empty")))
