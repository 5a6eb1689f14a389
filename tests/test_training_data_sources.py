"""train.py's data sources besides the built-in set: VOCdevkit + SBD files (train_aug)
and the TFDS builder, each trained and evaluated through `run` on tiny data written
in the real on-disk formats."""

import tarfile

import pytest

from deeplab_keras.data import synthetic
from deeplab_keras.training import apply_overrides, get_preset
from deeplab_keras.app.job import run

TINY = dict(width_multiplier=0.0625, crop_size=33, batch_size=2, steps=2, steps_per_epoch=2,
            checkpoint_every=2, export_dir=None, num_classes=synthetic.NUM_CLASSES)


@pytest.fixture(scope="module")
def voc_and_sbd(tmp_path_factory):
    """VOCdevkit (3 train, 2 val) and SBD (3 extra images) as the releases lay them out."""
    work = tmp_path_factory.mktemp("src")
    train, val, extra = ["2007_0", "2007_1", "2007_2"], ["2007_3", "2007_4"], ["2008_0", "2008_1", "2008_2"]
    exs = list(synthetic.make_examples(train + val, seed=3, min_hw=(20, 24), max_hw=(30, 36)))
    sbd = list(synthetic.make_examples(extra, seed=4, min_hw=(20, 24), max_hw=(30, 36),
                                       boundaries=False))
    synthetic.write_voc(work / "VOCdevkit", exs + sbd, {"train": train, "val": val,
                                                         "trainval": train + val})
    for name in extra:  # SBD-only images have no VOC label
        (work / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{name}.png").unlink()
    synthetic.write_sbd(work / "benchmark_RELEASE" / "dataset", sbd, extra[:2], extra[2:])
    synthetic.write_segmentation_class_aug(work / "SegmentationClassAug", sbd)
    return work


def _train_aug(voc_and_sbd, sbd_dir, tmp_path):
    config = apply_overrides(get_preset("builtin"), dict(
        TINY, data_dir=str(voc_and_sbd / "VOCdevkit"), sbd_dir=str(sbd_dir),
        train_split="train_aug", output_dir=str(tmp_path / "run")))
    result, evaluation, _ = run(config, verbose=0)
    assert result.step == 2 and result.config.train_split == "train_aug"
    assert evaluation.num_images == 2 and not evaluation.failed


def test_voc_files_with_segmentation_class_aug(voc_and_sbd, tmp_path):
    _train_aug(voc_and_sbd, voc_and_sbd / "SegmentationClassAug", tmp_path)


def test_voc_files_with_sbd_mat_train_aug(voc_and_sbd, tmp_path):
    _train_aug(voc_and_sbd, voc_and_sbd / "benchmark_RELEASE", tmp_path)


def test_tfds_builder(voc_and_sbd, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    manual = tmp_path / "manual"
    manual.mkdir()
    with tarfile.open(manual / "VOCtrainval_11-May-2012.tar", "w") as t:
        t.add(voc_and_sbd / "VOCdevkit", arcname="VOCdevkit")
    config = apply_overrides(get_preset("builtin"), dict(
        TINY, tfds=True, tfds_manual_dir=str(manual), tfds_data_dir=str(tmp_path / "tfds"),
        train_split="train", output_dir=str(tmp_path / "run")))
    result, evaluation, _ = run(config, verbose=0)
    assert result.step == 2
    assert evaluation.num_images == 2 and evaluation.settings["tfds"] is True
