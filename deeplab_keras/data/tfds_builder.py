"""TFDS builder `voc2012_segmentation`: PASCAL VOC 2012 segmentation (+ SBD).

TFDS's own `voc/2012` has boxes only; this builder adds the segmentation masks
from the official archives, which must be downloaded by hand (see
`MANUAL_DOWNLOAD_INSTRUCTIONS`). It reads them with the same reader as
`deeplab_keras.data.make_dataset` (`voc.list_examples`, `decode.read_label`),
so both paths give the same examples.

Configs:
  segmentation  VOC 2012 only: splits "train" (1,464) and "val" (1,449);
                "train+val" gives trainval.
  train_aug     VOC 2012 + SBD: splits "train_aug" (10,582) and "val".

Features:
  image              uint8 [H, W, 3], the original JPEG bytes (not re-encoded).
  segmentation_mask  uint8 [H, W, 1] class ids, 255 = ignore (stored as PNG).
  file_name          the VOC image name, e.g. "2007_000032".

Example:
    >>> import tensorflow_datasets as tfds
    >>> from deeplab_keras.data.tfds_builder import Voc2012Segmentation
    >>> b = Voc2012Segmentation(config="segmentation")
    >>> b.download_and_prepare(download_config=tfds.download.DownloadConfig(
    ...     manual_dir="~/Downloads"))
    >>> ds = b.as_dataset(split="val")
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from deeplab_keras.data import decode as dec
from deeplab_keras.data import voc
from deeplab_keras.palette import IGNORE_LABEL, VOC_CLASSES

VOC_TAR = "VOCtrainval_11-May-2012.tar"
SBD_TGZ = "benchmark.tgz"

_CITATION = """\
@misc{pascal-voc-2012,
  author = "Everingham, M. and Van~Gool, L. and Williams, C. K. I. and Winn, J. and Zisserman, A.",
  title = "The {PASCAL} {V}isual {O}bject {C}lasses {C}hallenge 2012 {(VOC2012)} {R}esults",
  howpublished = "http://www.pascal-network.org/challenges/VOC/voc2012/workshop/index.html"}
@inproceedings{hariharan2011semantic,
  title={Semantic contours from inverse detectors},
  author={Hariharan, Bharath and Arbel{\\'a}ez, Pablo and Bourdev, Lubomir and Maji, Subhransu and Malik, Jitendra},
  booktitle={ICCV}, year={2011}}
"""


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
    """PASCAL VOC 2012 semantic segmentation, optionally with SBD's extra labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(
            name="segmentation",
            description="VOC 2012 segmentation: train (1,464) and val (1,449)."),
        tfds.core.BuilderConfig(
            name="train_aug",
            description="VOC 2012 + SBD: train_aug = (SBD train ∪ SBD val ∪ VOC train) "
                        "− VOC val (10,582) and val (1,449)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put these files (or their unpacked directories) in the manual_dir
(default ~/tensorflow_datasets/downloads/manual/):
  {VOC_TAR}  (or a VOCdevkit/ directory) - PASCAL VOC 2012 trainval,
      http://host.robots.ox.ac.uk/pascal/VOC/voc2012/{VOC_TAR}
  {SBD_TGZ}  (or benchmark_RELEASE/, or a SegmentationClassAug/ directory of
      index PNGs) - needed for the train_aug config only; the Semantic
      Boundaries Dataset, http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/{SBD_TGZ}
"""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS 4.9.10 finds a builder's file through `importlib_resources`, a
        # package that current etils no longer installs; the file is this one.
        from etils import epath

        return epath.Path(__file__)

    def _info(self):
        return self.dataset_info_from_configs(
            description="PASCAL VOC 2012 semantic segmentation masks (21 classes, "
                        f"{IGNORE_LABEL} = boundary / ignore), with SBD for train_aug.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "segmentation_mask": tfds.features.Image(
                    shape=(None, None, 1), dtype=np.uint8, encoding_format="png"),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "segmentation_mask"),
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
            citation=_CITATION,
        )

    def _locate(self, dl_manager, dir_names, archive):
        manual = dl_manager.manual_dir
        for d in dir_names:
            if (manual / d).exists():
                return manual / d
        if (manual / archive).exists():
            return dl_manager.extract(manual / archive)
        raise FileNotFoundError(
            f"Neither {archive} nor {' / '.join(dir_names)} found in {manual}.\n"
            + self.MANUAL_DOWNLOAD_INSTRUCTIONS)

    def _split_generators(self, dl_manager):
        voc_root = self._locate(dl_manager, ["VOCdevkit"], VOC_TAR)
        voc_dir = os.fspath(voc_root)
        splits = {"val": self._generate_examples(voc_dir, "val", None)}
        if self.builder_config.name == "segmentation":
            splits["train"] = self._generate_examples(voc_dir, "train", None)
        else:
            sbd_root = os.fspath(self._locate(
                dl_manager, ["benchmark_RELEASE", "SegmentationClassAug"], SBD_TGZ))
            splits["train_aug"] = self._generate_examples(voc_dir, "train_aug", sbd_root)
        return splits

    def _generate_examples(self, voc_dir, split, sbd_dir):
        num_classes = len(VOC_CLASSES)
        for ex in voc.list_examples(voc_dir, split, sbd_dir=sbd_dir):
            h, w = dec.inspect_image(ex.image_path)
            label = dec.read_label(ex.label_path)
            if label.shape != (h, w):
                raise dec.DataError(
                    f"Image and label sizes differ: {ex.image_path} is {h}x{w}, "
                    f"{ex.label_path} is {label.shape[0]}x{label.shape[1]} (HxW)")
            bad = np.unique(label[(label >= num_classes) & (label != IGNORE_LABEL)])
            if bad.size:
                raise dec.DataError(f"Label values outside [0, {num_classes}) and "
                                    f"{IGNORE_LABEL} in {ex.label_path}: {bad[:16].tolist()}")
            with open(ex.image_path, "rb") as f:
                image_bytes = f.read()
            yield ex.name, {"image": image_bytes,
                            "segmentation_mask": label[..., None],
                            "file_name": ex.name}
