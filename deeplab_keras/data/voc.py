"""PASCAL VOC 2012 and SBD readers: directory layouts, split lists, train_aug.

Layouts read (as the archives unpack):

    VOCdevkit/VOC2012/                       (VOCtrainval_11-May-2012.tar)
        JPEGImages/<name>.jpg
        SegmentationClass/<name>.png         palette PNG, index = class id, 255 ignore
        ImageSets/Segmentation/{train,val,trainval}.txt

    SBD, either form:
      benchmark_RELEASE/dataset/             (benchmark.tgz)
          img/<name>.jpg, cls/<name>.mat (GTcls.Segmentation), train.txt, val.txt
      SegmentationClassAug/<name>.png        the widely shared index-PNG conversion
          (optionally with train.txt / val.txt beside the PNGs)

Splits (DESIGN.md §3): "train" (1,464), "val" (1,449), "trainval" from the VOC
lists; "train_aug" = (SBD train ∪ SBD val ∪ VOC train) − VOC val (10,582 with
the real data). For a SegmentationClassAug directory without list files, the
SBD names are the PNGs in it (that directory covers SBD ∪ VOC trainval, so the
arithmetic gives the same set).

Which label a train_aug name gets: VOC's own SegmentationClass PNG when the name
is in VOC trainval (finer, with the 255 boundary band), otherwise the SBD
label. Its image: VOC JPEGImages/<name>.jpg (VOC 2012 ships the images of all
SBD names), else SBD img/<name>.jpg.
"""

import dataclasses
import os
from pathlib import Path

from deeplab_keras.data.decode import DataError

SPLITS = ("train", "val", "trainval", "train_aug")


@dataclasses.dataclass(frozen=True)
class Example:
    """One image / label pair on disk."""

    name: str
    image_path: str
    label_path: str


def find_voc2012(data_dir):
    """Locate `VOC2012/` given a VOCdevkit dir, the VOC2012 dir itself, or the
    directory holding `VOCdevkit/`.

    Raises:
      FileNotFoundError: naming the first expected path that is missing.
    """
    if data_dir is None:
        raise ValueError("data_dir must be a path. Received: data_dir=None")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Data directory not found: {root}")
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() or (cand / "ImageSets").is_dir():
            voc = cand
            break
    else:
        raise FileNotFoundError(
            f"{root} is not a VOCdevkit directory: expected {root / 'VOC2012'} "
            f"(with JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/).")
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        if not (voc / sub).is_dir():
            raise FileNotFoundError(
                f"{root} is not a complete VOCdevkit directory: {voc / sub} is missing.")
    return voc


def read_name_list(path, image_suffixes=()):
    """The names of a split list: one image name per line, each once.

    Shared by the VOC lists and the lists of your own data
    (`deeplab_keras.data.custom`), which may write `name.jpg` or a path:
    with `image_suffixes`, a name ending in one of them loses it, and a path
    keeps its last part only.

    Raises:
      FileNotFoundError: no such file.
      DataError: a line with more than one field, or a name listed twice
        (naming the file and the line / names).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Split list not found: {path}")
    names = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 1:
            # ImageSets/Main files carry a "+1/-1" column; Segmentation lists do not.
            raise DataError(f"{path}:{lineno}: expected one image name per line. "
                            f"Received: {line!r}")
        name = parts[0]
        if image_suffixes:
            if Path(name).suffix.lower() in image_suffixes:
                name = Path(name).stem
            name = Path(name).name
        names.append(name)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise DataError(f"{path} lists names more than once: {dup}")
    return names


def read_split(voc_dir, split):
    """Names in a VOC split list (`ImageSets/Segmentation/<split>.txt`).

    Args:
      voc_dir: VOCdevkit (or VOC2012) directory.
      split: "train", "val" or "trainval".

    Returns:
      list[str] of image names, in file order.
    """
    if split not in ("train", "val", "trainval"):
        raise ValueError(f"split must be 'train', 'val' or 'trainval' for VOC lists. "
                         f"Received: split={split!r}")
    voc = find_voc2012(voc_dir)
    return read_name_list(voc / "ImageSets" / "Segmentation" / f"{split}.txt")


@dataclasses.dataclass(frozen=True)
class SBD:
    """A located SBD source: label_dir holds <name>.mat or <name>.png labels."""

    label_dir: Path
    label_ext: str
    image_dir: Path | None
    train: tuple
    val: tuple


def find_sbd(sbd_dir):
    """Locate SBD: `benchmark_RELEASE`, its `dataset/`, or a SegmentationClassAug dir.

    Raises:
      FileNotFoundError: the directory or its expected contents are missing.
    """
    root = Path(sbd_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"SBD directory not found: {root}")
    for cand in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (cand / "cls").is_dir():
            for f in ("train.txt", "val.txt"):
                if not (cand / f).is_file():
                    raise FileNotFoundError(
                        f"{root} looks like SBD (has {cand / 'cls'}) but {cand / f} is missing.")
            return SBD(cand / "cls", ".mat", cand / "img",
                       tuple(read_name_list(cand / "train.txt")),
                       tuple(read_name_list(cand / "val.txt")))
    for cand in (root, root / "SegmentationClassAug"):
        pngs = sorted(p.stem for p in cand.glob("*.png")) if cand.is_dir() else []
        if pngs:
            if (cand / "train.txt").is_file() and (cand / "val.txt").is_file():
                train = read_name_list(cand / "train.txt")
                val = read_name_list(cand / "val.txt")
            else:
                train, val = pngs, []
            return SBD(cand, ".png", None, tuple(train), tuple(val))
    raise FileNotFoundError(
        f"{root} is not an SBD directory: expected {root / 'dataset' / 'cls'} (SBD's "
        f"benchmark_RELEASE with cls/*.mat, train.txt, val.txt) or a "
        f"SegmentationClassAug directory of <name>.png label files.")


def train_aug_names(voc_train, voc_val, sbd_train, sbd_val):
    """(SBD train ∪ SBD val ∪ VOC train) − VOC val, sorted."""
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def list_examples(data_dir, split, sbd_dir=None):
    """The (name, image path, label path) of every example in a split.

    Args:
      data_dir: VOCdevkit directory (or VOC2012, or the dir holding VOCdevkit).
      split: one of SPLITS.
      sbd_dir: SBD location, required for "train_aug".

    Returns:
      list[Example]. Files are not opened here (see `decode.inspect_*`).

    Raises:
      ValueError: unknown split, or train_aug without sbd_dir.
      FileNotFoundError: layout paths or list files missing.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    voc = find_voc2012(data_dir)
    jpeg, seg = voc / "JPEGImages", voc / "SegmentationClass"
    if split != "train_aug":
        return [Example(n, str(jpeg / f"{n}.jpg"), str(seg / f"{n}.png"))
                for n in read_split(voc.parent, split)]
    if sbd_dir is None:
        raise ValueError("split='train_aug' needs the SBD labels: pass sbd_dir (SBD's "
                         "benchmark_RELEASE or a SegmentationClassAug directory). "
                         "Received: sbd_dir=None")
    sbd = find_sbd(sbd_dir)
    voc_train = read_split(voc.parent, "train")
    voc_val = read_split(voc.parent, "val")
    voc_labelled = set(voc_train) | set(voc_val)
    trainval = voc / "ImageSets" / "Segmentation" / "trainval.txt"
    if trainval.is_file():
        voc_labelled |= set(read_name_list(trainval))
    out = []
    for n in train_aug_names(voc_train, voc_val, sbd.train, sbd.val):
        if n in voc_labelled:
            label = seg / f"{n}.png"
        else:
            label = sbd.label_dir / f"{n}{sbd.label_ext}"
        image = jpeg / f"{n}.jpg"
        if not image.is_file() and sbd.image_dir is not None:
            sbd_image = sbd.image_dir / f"{n}.jpg"
            if sbd_image.is_file():
                image = sbd_image
        out.append(Example(n, str(image), str(label)))
    return out
