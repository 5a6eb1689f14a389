"""Synthetic segmentation scenes and writers for the real on-disk formats.

The built-in dataset (`deeplab_keras.data.builtin`) and the tests use these to
produce data in exactly the layouts users have for PASCAL VOC 2012 and SBD:

- VOCdevkit: `VOC2012/JPEGImages/*.jpg`, `VOC2012/SegmentationClass/*.png`
  (palette PNGs whose palette index is the class id, 255 on boundaries) and
  `VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt`.
- SBD (`benchmark_RELEASE/dataset`): `img/*.jpg`, `cls/*.mat` holding a MATLAB
  struct `GTcls` with field `Segmentation` (uint8 class ids, no boundary
  label), `train.txt`, `val.txt`.
- `SegmentationClassAug`: a flat directory of single-channel index PNGs.

A scene is a textured background with a few shapes; each class has its own
shape, hue and texture so a small network separates them within minutes on a
CPU. Everything is drawn with NumPy from one `np.random.Generator`, so a seed
fixes the output exactly.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_keras.palette import IGNORE_LABEL, VOC_PALETTE

CLASS_NAMES = ("background", "disc", "square", "triangle", "ring", "cross")
NUM_CLASSES = len(CLASS_NAMES)

# Mean RGB colour of each foreground class (index = class id). Saturated hues
# far from the muted background colours below.
_CLASS_RGB = np.array([
    [0, 0, 0],        # background (unused: backgrounds are drawn separately)
    [215, 40, 40],    # disc: red
    [40, 190, 60],    # square: green
    [40, 80, 220],    # triangle: blue
    [235, 200, 30],   # ring: yellow
    [200, 50, 210],   # cross: magenta
], np.float32)

# Pixels within this Chebyshev distance of a pixel of another class are marked
# 255, like the few-pixel "void" outline VOC draws around every object.
BOUNDARY_RADIUS = 1


def _background(rng, h, w):
    """A muted, low-saturation texture: a random tint, sinusoids and noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grey = rng.uniform(70, 170)
    tint = rng.uniform(-20, 20, size=3).astype(np.float32)
    field = np.zeros((h, w), np.float32)
    for _ in range(3):
        fy, fx = rng.uniform(-0.15, 0.15, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        field += rng.uniform(5, 18) * np.sin(fy * yy + fx * xx + phase)
    img = grey + tint[None, None, :] + field[..., None]
    img += rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
    return img


def _shape_mask(cls, rng, h, w):
    """Boolean [h, w] mask of one object of class `cls` at a random place."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    size = rng.uniform(0.18, 0.38) * min(h, w)
    cy = rng.uniform(0.15, 0.85) * h
    cx = rng.uniform(0.15, 0.85) * w
    dy, dx = yy - cy, xx - cx
    if cls == 1:  # disc
        return dy ** 2 + dx ** 2 <= size ** 2
    if cls == 2:  # square, slightly rotated
        a = rng.uniform(-0.4, 0.4)
        u = np.cos(a) * dx + np.sin(a) * dy
        v = -np.sin(a) * dx + np.cos(a) * dy
        return (np.abs(u) <= 0.9 * size) & (np.abs(v) <= 0.9 * size)
    if cls == 3:  # upward triangle
        top = cy - size
        base = cy + 0.8 * size
        half = (yy - top) / (base - top) * size * 1.1
        return (yy >= top) & (yy <= base) & (np.abs(dx) <= half)
    if cls == 4:  # ring
        r2 = dy ** 2 + dx ** 2
        return (r2 <= size ** 2) & (r2 >= (0.55 * size) ** 2)
    if cls == 5:  # cross (plus sign)
        arm = 0.33 * size
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= size)) | (
            (np.abs(dy) <= arm) & (np.abs(dx) <= size))
    raise ValueError(f"Unknown synthetic class. Received: cls={cls}")


def _texture(cls, rng, h, w):
    """Per-class texture modulating the class colour (float32 [h, w, 1])."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if cls == 2:  # horizontal stripes
        t = 25 * np.sign(np.sin(yy * 0.8 + rng.uniform(0, 6)))
    elif cls == 3:  # checkerboard
        t = 20 * (((yy // 4) + (xx // 4)) % 2 * 2 - 1)
    elif cls == 5:  # dots
        t = -30 * ((np.mod(yy, 6) < 2) & (np.mod(xx, 6) < 2))
    else:  # smooth with noise
        t = rng.normal(0, 8, size=(h, w)).astype(np.float32)
    return t[..., None].astype(np.float32)


def mark_boundaries(label, radius=BOUNDARY_RADIUS):
    """Set pixels within `radius` of a different class to 255 (VOC's void).

    Args:
      label: uint8 [H, W] class ids.
      radius: Chebyshev radius in pixels; the void band is about 2*radius wide.

    Returns:
      uint8 [H, W], a copy with the boundary band set to 255.
    """
    from scipy import ndimage

    size = 2 * radius + 1
    hi = ndimage.maximum_filter(label, size=size, mode="nearest")
    lo = ndimage.minimum_filter(label, size=size, mode="nearest")
    out = label.copy()
    out[hi != lo] = IGNORE_LABEL
    return out


def render_scene(rng, height, width, max_objects=3, num_classes=NUM_CLASSES):
    """Draw one scene.

    Args:
      rng: `np.random.Generator`.
      height, width: image size in pixels.
      max_objects: objects per image are drawn from 1..max_objects.
      num_classes: classes in use (background included), 2..NUM_CLASSES.

    Returns:
      (image uint8 [H, W, 3] RGB, classes uint8 [H, W] without boundary marks).
    """
    if not 2 <= num_classes <= NUM_CLASSES:
        raise ValueError(f"num_classes must be in [2, {NUM_CLASSES}]. "
                         f"Received: num_classes={num_classes}")
    img = _background(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, num_classes))
        mask = _shape_mask(cls, rng, height, width)
        colour = _CLASS_RGB[cls] + rng.uniform(-20, 20, size=3)
        obj = colour[None, None, :] + _texture(cls, rng, height, width)
        img = np.where(mask[..., None], obj, img)
        label[mask] = cls
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img, label


def palette_png_bytes(label):
    """uint8 [H, W] class ids -> bytes of a VOC palette PNG (mode "P")."""
    im = Image.fromarray(np.asarray(label, np.uint8), mode="P")
    im.putpalette(VOC_PALETTE.reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(image, quality=90):
    """uint8 [H, W, 3] RGB -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8), mode="RGB").save(
        buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_voc(voc_root, examples, splits):
    """Write examples in the VOCdevkit layout.

    Args:
      voc_root: the VOCdevkit directory; `VOC2012/` is created inside.
      examples: iterable of (name, image uint8 [H,W,3], label uint8 [H,W]) with
        255 already marked where wanted.
      splits: dict split name -> list of names for ImageSets/Segmentation.

    Returns:
      Path of `VOC2012`.
    """
    voc = Path(voc_root) / "VOC2012"
    for name, image, label in examples:
        _write(voc / "JPEGImages" / f"{name}.jpg", jpeg_bytes(image))
        _write(voc / "SegmentationClass" / f"{name}.png", palette_png_bytes(label))
    for split, names in splits.items():
        _write(voc / "ImageSets" / "Segmentation" / f"{split}.txt",
               "".join(f"{n}\n" for n in names).encode())
    return voc


def write_sbd(sbd_root, examples, train_names, val_names):
    """Write examples in SBD's `benchmark_RELEASE/dataset` layout.

    `cls/<name>.mat` holds `GTcls` (a MATLAB struct) with `Segmentation` (uint8
    class ids, SBD has no boundary label), `Boundaries` and `CategoriesPresent`,
    as in the release.

    Args:
      sbd_root: the `dataset` directory to create.
      examples: iterable of (name, image uint8 [H,W,3], classes uint8 [H,W]).
      train_names, val_names: the names for `train.txt` / `val.txt`.

    Returns:
      Path of `sbd_root`.
    """
    from scipy import io as sio

    root = Path(sbd_root)
    (root / "cls").mkdir(parents=True, exist_ok=True)
    for name, image, label in examples:
        _write(root / "img" / f"{name}.jpg", jpeg_bytes(image))
        present = np.unique(label[(label > 0) & (label < 255)]).astype(np.uint8)
        gt = {"Segmentation": np.asarray(label, np.uint8),
              "Boundaries": np.empty((0, 1), dtype=object),
              "CategoriesPresent": present.reshape(-1, 1)}
        sio.savemat(str(root / "cls" / f"{name}.mat"), {"GTcls": gt},
                    do_compression=True)
    _write(root / "train.txt", "".join(f"{n}\n" for n in train_names).encode())
    _write(root / "val.txt", "".join(f"{n}\n" for n in val_names).encode())
    return root


def write_segmentation_class_aug(aug_dir, examples):
    """Write single-channel ("L") index PNGs, the `SegmentationClassAug` form."""
    aug = Path(aug_dir)
    aug.mkdir(parents=True, exist_ok=True)
    for name, _, label in examples:
        Image.fromarray(np.asarray(label, np.uint8), mode="L").save(aug / f"{name}.png")
    return aug


def random_size(rng, min_hw=(120, 160), max_hw=(180, 240)):
    """A random (height, width) between `min_hw` and `max_hw` inclusive."""
    return (int(rng.integers(min_hw[0], max_hw[0] + 1)),
            int(rng.integers(min_hw[1], max_hw[1] + 1)))


def make_examples(names, seed, min_hw=(120, 160), max_hw=(180, 240),
                  boundaries=True, num_classes=NUM_CLASSES):
    """Deterministic synthetic examples, one per name.

    Each example has its own generator seeded by (seed, index), so a subset of
    names renders the same pixels as in the full set.

    Yields:
      (name, image uint8 [H,W,3], label uint8 [H,W]).
    """
    for i, name in enumerate(names):
        rng = np.random.default_rng([seed, i])
        h, w = random_size(rng, min_hw, max_hw)
        image, label = render_scene(rng, h, w, num_classes=num_classes)
        if boundaries:
            label = mark_boundaries(label)
        yield name, image, label

