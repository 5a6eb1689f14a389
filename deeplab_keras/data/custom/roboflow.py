"""Layout "roboflow": Roboflow's "Semantic Segmentation Masks" export.

`train/`, `valid/`, `test/`, each with `<stem>.jpg`, `<stem>_mask.png` and
`_classes.csv` (`Pixel Value, Class`). Split "val" reads `valid/`.
"""

from deeplab_keras.data.custom.files import images_in, masks_in, pair, require_images

NAME = "roboflow"
_FOLDERS = (("train", "train"), ("valid", "val"), ("test", "test"))


def detect(root):
    """True when a `train/`, `valid/` or `test/` folder holds `_classes.csv`."""
    return any((root / f / "_classes.csv").is_file() for f, _ in _FOLDERS)


def read(root):
    """(splits, split note, the first `_classes.csv`) of the export at `root`."""
    splits = {}
    for folder, split in _FOLDERS:
        d = root / folder
        if not d.is_dir():
            continue
        masks = masks_in(d, suffix="_mask")
        images = {s: p for s, p in images_in(d).items() if not s.endswith("_mask")}
        require_images(images, d)
        splits[split] = pair(images, masks, d, d, f" in {d}")
    table_file = next(root / f / "_classes.csv" for f, _ in _FOLDERS
                      if (root / f / "_classes.csv").is_file())
    return splits, "Roboflow folders " + ", ".join(splits), table_file
