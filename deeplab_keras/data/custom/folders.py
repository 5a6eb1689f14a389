"""Layout "folders": `images/` + `masks/` with the same file stems.

Split by `train.txt` / `val.txt` (/ `test.txt`) beside them, or by
`images/train/` + `masks/train/` (or `train/images/` + `train/masks/`)
subfolders; with neither, a seeded 90/10 split (`splits.SPLIT_SEED`,
`splits.VAL_FRACTION`, stated in `Dataset.split_note`). Optional class table
beside them: `labelmap.txt`, `class_dict.csv`, `_classes.csv` or `classes.txt`.
"""

from deeplab_keras.data.custom.files import find_table, images_in, masks_in, pair, require_images
from deeplab_keras.data.custom.splits import from_lists, seeded_splits
from deeplab_keras.data.decode import DataError

NAME = "folders"
_SPLITS = ("train", "val", "test")


def detect(root):
    """True when `root` has `images/` (or `<split>/images/`)."""
    return (root / "images").is_dir() or any((root / s / "images").is_dir() for s in _SPLITS)


def read(root):
    """(splits, split note, class table file or None) of the folders under `root`."""
    split_dirs = [s for s in _SPLITS
                  if (root / "images" / s).is_dir() or (root / s / "images").is_dir()]
    if split_dirs:
        splits = {}
        for s in split_dirs:
            if (root / "images" / s).is_dir():
                idir, mdir = root / "images" / s, root / "masks" / s
            else:
                idir, mdir = root / s / "images", root / s / "masks"
            if not mdir.is_dir():
                raise DataError(f"{idir} has no mask folder {mdir}.")
            images = images_in(idir)
            require_images(images, idir)
            splits[s] = pair(images, masks_in(mdir), idir, mdir)
        return splits, f"split folders {', '.join(split_dirs)}", find_table(root)
    idir, mdir = root / "images", root / "masks"
    images = images_in(idir)
    require_images(images, idir)
    if not mdir.is_dir():
        raise DataError(f"{idir} has no mask folder {mdir} (masks/ beside images/, same "
                        "file stems).")
    pairs = pair(images, masks_in(mdir), idir, mdir)
    lists = {s: root / f"{s}.txt" for s in _SPLITS if (root / f"{s}.txt").is_file()}
    if lists:
        note = "lists " + ", ".join(p.name for p in lists.values())
        return from_lists(pairs, lists, root), note, find_table(root)
    return *seeded_splits(pairs), find_table(root)
