"""Layout "voc_export": a VOC-like export of a labelling tool.

CVAT "Segmentation mask 1.1", Label Studio, Roboflow as VOC: `JPEGImages/`,
`SegmentationClass/`, `ImageSets/Segmentation/*.txt`, and a `labelmap.txt`
(`name:r,g,b::`) or `_classes.csv`. A single list (CVAT's `default.txt`) gets
the seeded 90/10 split. A VOCdevkit (no class table) is not this layout:
`deeplab_keras.data.voc` reads it.
"""

from deeplab_keras.data.custom.files import find_table, images_in, masks_in, pair, require_images
from deeplab_keras.data.custom.splits import from_lists, read_names, seeded_splits
from deeplab_keras.data.decode import DataError

NAME = "voc_export"


def detect(root):
    """True when `root` has `SegmentationClass/`."""
    return (root / "SegmentationClass").is_dir()


def read(root):
    """(splits, split note, class table file) of the export at `root`."""
    seg = root / "SegmentationClass"
    jpeg = root / "JPEGImages"
    if not jpeg.is_dir():
        raise DataError(f"{root} has {seg} but no JPEGImages/ folder: export the images too "
                        "(CVAT: 'Save images').")
    images = images_in(jpeg)
    require_images(images, jpeg)
    masks = masks_in(seg)
    lists_dir = root / "ImageSets" / "Segmentation"
    lists = {p.stem: p for p in sorted(lists_dir.glob("*.txt"))} if lists_dir.is_dir() else {}
    if lists:
        listed = set()
        for p in lists.values():
            listed.update(read_names(p))
        images = {s: p for s, p in images.items() if s in listed}
        masks = {s: p for s, p in masks.items() if s in listed}
    pairs = pair(images, masks, jpeg, seg)
    if "train" in lists:
        splits = from_lists(pairs, lists, root)
        note = "lists " + ", ".join(f"ImageSets/Segmentation/{p.name}" for p in lists.values())
    else:
        one = f"one list {', '.join(p.name for p in lists.values())}; " if lists else ""
        splits, note = seeded_splits(pairs, one)
    table_file = find_table(root)
    if table_file is None:
        raise DataError(f"{root} looks like a VOC-like export (SegmentationClass/) but has "
                        "no labelmap.txt or _classes.csv; without it the colours have no "
                        "class names (a plain VOCdevkit needs "
                        "ImageSets/Segmentation/train.txt).")
    return splits, note, table_file
