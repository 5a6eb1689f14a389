"""Listing a layout's folders: images and masks matched by file stem, the table file."""

from pathlib import Path

from deeplab_keras.data.custom.tables import TABLE_FILES
from deeplab_keras.data.decode import DataError
from deeplab_keras.data.voc import Example

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_MASK_LIKE = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def images_in(directory):
    """{stem: path} of the image files directly in `directory` (sorted)."""
    out = {}
    for p in sorted(Path(directory).iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in out:
                raise DataError(f"Two images with the stem {p.stem!r}: {out[p.stem]} and {p}; "
                                "an image and its mask are matched by stem.")
            out[p.stem] = p
    return out


def masks_in(directory, suffix=""):
    """{image stem: mask path} of the mask files in `directory` named <stem><suffix>.<ext>."""
    out = {}
    for p in sorted(Path(directory).iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        ext = p.suffix.lower()
        if ext not in _MASK_LIKE:
            continue
        stem = p.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if ext != ".png":
            raise DataError(f"Mask {p} is not a PNG: masks must be lossless PNGs "
                            "(JPEG compression changes class ids at every edge).")
        out[stem] = p
    return out


def pair(images, masks, image_dir, mask_dir, what=""):
    """Examples of matched stems; an image without mask or a mask without image is an error."""
    no_mask = [images[s] for s in images if s not in masks]
    no_image = [masks[s] for s in masks if s not in images]
    problems = []
    if no_mask:
        problems.append(f"{len(no_mask)} image(s) without a mask in {mask_dir} (e.g. "
                        + ", ".join(str(p) for p in no_mask[:3]) + ")")
    if no_image:
        problems.append(f"{len(no_image)} mask(s) without an image in {image_dir} (e.g. "
                        + ", ".join(str(p) for p in no_image[:3]) + ")")
    if problems:
        raise DataError(f"Images and masks do not pair up{what}: " + "; ".join(problems)
                        + ". Each image needs a mask with the same file stem.")
    return [Example(s, str(images[s]), str(masks[s])) for s in sorted(images)]


def require_images(images, directory):
    """DataError when `images` (from `images_in(directory)`) is empty."""
    if not images:
        raise DataError(f"No images found in {directory} (expected "
                        f"{', '.join(IMAGE_SUFFIXES)} files).")


def find_table(*dirs):
    """The first class table file (`TABLE_FILES` order) in `dirs`, or None."""
    for d in dirs:
        for name in TABLE_FILES:
            if (Path(d) / name).is_file():
                return Path(d) / name
    return None
