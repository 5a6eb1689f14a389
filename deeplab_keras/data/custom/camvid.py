"""Layout "camvid": `train/`, `train_labels/`, `val/`, `val_labels/` (`test*`).

With a `class_dict.csv` (`name,r,g,b`); labels `<stem>_L.png` or `<stem>.png`.
"""

from deeplab_keras.data.custom.files import images_in, masks_in, pair, require_images
from deeplab_keras.data.decode import DataError

NAME = "camvid"


def detect(root):
    """True when `root` has `class_dict.csv` and `train_labels/`."""
    return (root / "class_dict.csv").is_file() and (root / "train_labels").is_dir()


def read(root):
    """(splits, split note, `class_dict.csv`) of the CamVid folders at `root`."""
    splits = {}
    for split in ("train", "val", "test"):
        idir, ldir = root / split, root / f"{split}_labels"
        if not idir.is_dir():
            continue
        if not ldir.is_dir():
            raise DataError(f"{idir} has no label folder {ldir}.")
        images = images_in(idir)
        require_images(images, idir)
        masks = masks_in(ldir, suffix="_L") or masks_in(ldir)
        splits[split] = pair(images, masks, idir, ldir)
    if "train" not in splits:
        raise DataError(f"{root} has class_dict.csv but no train/ and train_labels/ folders.")
    return splits, "CamVid folders " + ", ".join(splits), root / "class_dict.csv"
