"""Image and label decoding, with validation that names the offending file.

Validation is split in two so that it costs the input pipeline almost nothing:

1. A header pre-scan in Python (`inspect_image`, `inspect_label`), run once when
   a dataset is built: the file exists, is a JPEG/PNG that PIL can identify,
   its size (read from the header, nothing is decoded or allocated) is within
   `max_image_pixels`, a JPEG ends with its end-of-image marker and a PNG with
   its IEND chunk (truncated files), label PNG chunk checksums are right
   (corrupted label data), and the label's mode is one this module can decode
   exactly. It takes about 0.5 ms per example on this 2-core machine (about
   5 s for the 10,582 train_aug examples).
2. Checks inside the tf.data map (`decode_example_tf`), on the decoded pixels:
   image and label have the same size, every label value is in
   [0, num_classes) or 255. They are `tf.debugging.Assert`s whose message
   includes the file name, so a bad file fails with its name and costs only a
   reduction per example.

`validate="full"` in `deeplab_keras.data.make_dataset` additionally decodes
every file with PIL / SciPy up front (`read_image`, `read_label`), which finds
corrupt pixel data and bad label values before training starts (slow: a full
decode of the dataset). Without it, a JPEG whose entropy-coded data is
corrupt (end marker intact) fails inside TensorFlow's decoder with
"jpeg::Uncompress failed", which does not name the file: JPEG has no
checksum to test cheaply. `validate="full"` names it; `on_error="skip"` drops
it and TF logs the failure.

Label encodings (`LabelKind`):
- INDEX: 8-bit single-channel PNG ("L"), the value is the class id
  (SegmentationClassAug).
- COLOUR: a palette PNG whose palette is the VOC colour map (VOC's own
  SegmentationClass files) or an RGB PNG painted with the VOC colours. TF
  expands palettes to RGB, so the class id is recovered by inverting the VOC
  colour map (a bit permutation); a colour that is not in the map is an error
  naming the file and the colour.
- PYTHON: decoded by PIL/SciPy through `tf.numpy_function`: palette PNGs with
  another palette (the palette index is the class id, as in VOC) and SBD
  `cls/*.mat` files (`GTcls.Segmentation`).
Rejected with a message: 16-bit / 32-bit / float / bilevel / grey+alpha / RGBA
label PNGs and JPEG labels (lossy compression changes class ids).

EXIF orientation is ignored for images (TF's decoders do not apply it and
neither does `read_image`): VOC's labels are aligned to the stored pixels, so
rotating the image alone would misalign it from its label.

Images: anything `tf.io.decode_image` reads (JPEG incl. greyscale and CMYK,
PNG incl. palette, greyscale, RGBA (alpha dropped) and 16-bit (reduced to 8
bits)), always returned as RGB uint8.
"""

import enum
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from deeplab_keras.palette import IGNORE_LABEL, VOC_PALETTE

# VOC images are at most 500x500; this refuses e.g. a 10000x10000 file before
# anything is allocated (the size comes from the header).
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096

_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"
_TAIL_BYTES = 4096


class DataError(ValueError):
    """A dataset file is missing, corrupt or inconsistent (the message names it)."""


class LabelKind(enum.IntEnum):
    INDEX = 0
    COLOUR = 1
    PYTHON = 2


def _open(path, what):
    if not os.path.isfile(path):
        raise DataError(f"{what} file not found: {path}")
    try:
        with warnings.catch_warnings():
            # Sizes are checked against max_image_pixels by the caller.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as e:
        raise DataError(f"{what} file is too large to decode safely ({e}): {path}") from e
    except UnidentifiedImageError as e:
        raise DataError(f"{what} file is not a readable image (not JPEG/PNG or "
                        f"corrupt header): {path}") from e
    except OSError as e:
        raise DataError(f"{what} file could not be read: {path} ({e})") from e


def _check_tail(path, fmt, what):
    """Truncated JPEG/PNG files lose their end marker; check it without decoding."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
    if fmt == "JPEG" and _JPEG_EOI not in tail:
        raise DataError(f"{what} JPEG is truncated (no end-of-image marker): {path}")
    if fmt == "PNG" and _PNG_IEND not in tail:
        raise DataError(f"{what} PNG is truncated (no IEND chunk): {path}")


def _check_size(size_wh, max_pixels, path, what):
    w, h = size_wh
    if w < 1 or h < 1:
        raise DataError(f"{what} has an empty size {w}x{h}: {path}")
    if max_pixels is not None and w * h > max_pixels:
        raise DataError(
            f"{what} is {w}x{h} = {w * h} pixels, more than max_image_pixels="
            f"{max_pixels}; refusing to decode it (resize it offline or raise "
            f"max_image_pixels): {path}")


def inspect_image(path, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Header check of an image file.

    Args:
      path: str, a JPEG or PNG file.
      max_image_pixels: refuse images with more pixels (None: no limit).

    Returns:
      (height, width) from the header.

    Raises:
      DataError: missing, unidentifiable, truncated, unsupported or too large.
    """
    path = os.fspath(path)
    with _open(path, "Image") as im:
        fmt = im.format
        if fmt not in ("JPEG", "PNG", "MPO"):
            raise DataError(f"Image format {fmt} is not supported (use JPEG or PNG): {path}")
        _check_size(im.size, max_image_pixels, path, "Image")
        w, h = im.size
    _check_tail(path, "PNG" if fmt == "PNG" else "JPEG", "Image")
    return h, w


def _palette_rgb(im):
    """The palette of a "P" image as uint8 [N, 3], read without decoding pixels.

    (`Image.getpalette()` loads the whole image first; the PNG reader already
    holds the raw PLTE chunk after `Image.open`.)
    """
    pal = getattr(im, "palette", None)
    data = None
    if pal is not None and pal.mode == "RGB" and getattr(pal, "rawmode", None) in (
            None, "RGB"):
        data = pal.palette
    if data is None:
        data = im.getpalette()  # fallback: decodes the image
        if data is None:
            return None
    return np.frombuffer(bytes(data), np.uint8)[: len(data) // 3 * 3].reshape(-1, 3)


def _is_voc_palette(im):
    pal = _palette_rgb(im)
    if pal is None:
        return False
    n = min(len(pal), 256)
    return bool(np.array_equal(pal[:n], VOC_PALETTE[:n]))


def inspect_label_header(path, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Header check of a label PNG, shared by the VOC and the custom-layout readers.

    Args:
      path: str, a label PNG.
      max_image_pixels: refuse labels with more pixels (None: no limit).

    Returns:
      (PIL mode str, (height, width), whether a "P" image has the VOC palette).

    Raises:
      DataError: missing, not a PNG (lossy JPEG labels change class ids),
        corrupt chunks, truncated, or too large.
    """
    path = os.fspath(path)
    with _open(path, "Label") as im:
        fmt, mode, size = im.format, im.mode, im.size
        voc_palette = mode == "P" and _is_voc_palette(im)
        if fmt == "PNG" and (max_image_pixels is None
                             or size[0] * size[1] <= max_image_pixels):
            try:
                # Checks every chunk's CRC without inflating the pixels: finds
                # corrupted label data here, with the file's name.
                im.verify()
            except Exception as e:  # PIL raises SyntaxError/OSError/struct.error
                raise DataError(f"Label PNG is corrupt ({e}): {path}") from e
    if fmt != "PNG":
        raise DataError(f"Label must be a PNG (lossy {fmt} changes class ids): {path}")
    _check_size(size, max_image_pixels, path, "Label")
    _check_tail(path, "PNG", "Label")
    w, h = size
    return mode, (h, w), voc_palette


def inspect_label(path, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Header check of a label file and the way to decode it.

    Args:
      path: str, a PNG label or an SBD `.mat` file.
      max_image_pixels: refuse labels with more pixels (None: no limit).

    Returns:
      (kind: LabelKind, (height, width) or None for `.mat` files).

    Raises:
      DataError: missing, unreadable, truncated or in an unsupported mode.
    """
    path = os.fspath(path)
    if path.endswith(".mat"):
        if not os.path.isfile(path):
            raise DataError(f"Label file not found: {path}")
        return LabelKind.PYTHON, None
    mode, (h, w), voc_palette = inspect_label_header(path, max_image_pixels)
    if mode == "L":
        return LabelKind.INDEX, (h, w)
    if mode == "P":
        return (LabelKind.COLOUR if voc_palette else LabelKind.PYTHON), (h, w)
    if mode == "RGB":
        return LabelKind.COLOUR, (h, w)
    raise DataError(
        f"Label PNG mode {mode!r} is not supported: labels must be palette "
        f"('P', palette index = class id), 8-bit single channel ('L', value = class "
        f"id) or RGB painted with the VOC colour map: {path}")


def _colour_tables():
    """Per-channel contribution of a value 0..255 to the inverted VOC id."""
    v = np.arange(256)
    tables = np.zeros((3, 256), np.int32)
    for ch in range(3):
        for j in range(8):
            tables[ch] |= ((v >> (7 - j)) & 1) << (3 * j + ch)
    return tables


_COLOUR_TABLES = _colour_tables()


def colours_to_ids(rgb):
    """Invert the VOC colour map: uint8 [..., 3] RGB -> int32 [...] ids.

    The VOC map spreads the bits of the id over the top bits of R, G and B, so
    the inverse is a bit permutation (three table look-ups OR-ed together); a
    colour outside the map gives an id >= 256. Works on NumPy arrays and
    tf.Tensors.
    """
    t = _COLOUR_TABLES
    if isinstance(rgb, np.ndarray):
        rgb = rgb.astype(np.intp)
        return t[0][rgb[..., 0]] | t[1][rgb[..., 1]] | t[2][rgb[..., 2]]
    import tensorflow as tf

    rgb = tf.cast(rgb, tf.int32)
    return (tf.gather(t[0], rgb[..., 0]) + tf.gather(t[1], rgb[..., 1])
            + tf.gather(t[2], rgb[..., 2]))  # disjoint bits: + is OR


def read_label(path):
    """Decode a label file with PIL / SciPy (the reference decoder).

    Args:
      path: a PNG (palette, "L" or VOC-coloured RGB) or an SBD `cls/*.mat`.

    Returns:
      uint8 [H, W] class ids, 255 where the file marks ignore.

    Raises:
      DataError: unreadable, unsupported mode, or colours outside the VOC map.
    """
    path = os.fspath(path)
    if path.endswith(".mat"):
        return _read_mat(path)
    kind, _ = inspect_label(path, max_image_pixels=None)
    try:
        with Image.open(path) as im:
            if kind == LabelKind.COLOUR and im.mode == "P":
                return np.asarray(im, np.uint8)  # palette index = class id
            arr = np.asarray(im)
    except OSError as e:
        raise DataError(f"Label PNG is corrupt: {path} ({e})") from e
    if kind == LabelKind.INDEX or arr.ndim == 2:
        return arr.astype(np.uint8)
    ids = colours_to_ids(arr[..., :3])
    if (ids > 255).any():
        bad = arr[..., :3][ids > 255][0]
        raise DataError(f"Label colour {tuple(int(v) for v in bad)} is not in the "
                        f"VOC colour map: {path}")
    return ids.astype(np.uint8)


def _read_mat(path):
    from scipy import io as sio

    if not os.path.isfile(path):
        raise DataError(f"Label file not found: {path}")
    try:
        mat = sio.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises several types for bad files
        raise DataError(f"SBD .mat label could not be read: {path} ({e})") from e
    gt = mat.get("GTcls")
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise DataError(f"SBD .mat label has no GTcls.Segmentation: {path} "
                        f"(variables: {sorted(k for k in mat if not k.startswith('__'))})")
    seg = np.asarray(seg)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer) and not np.all(
            np.mod(seg, 1) == 0):
        raise DataError(f"SBD GTcls.Segmentation must be an integer 2-D map, got "
                        f"{seg.dtype} {seg.shape}: {path}")
    if seg.min() < 0 or seg.max() > 255:
        raise DataError(f"SBD GTcls.Segmentation values outside 0..255: {path}")
    return seg.astype(np.uint8)


def read_image(path):
    """Decode an image with PIL as RGB uint8 [H, W, 3], EXIF orientation ignored."""
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"Image file is corrupt or unreadable: {path} ({e})") from e


def path_str(path):
    """A path as `tf.numpy_function` passes it (a 0-d array of bytes) -> str."""
    if isinstance(path, np.ndarray):
        path = path.item()
    if isinstance(path, bytes):
        path = path.decode()
    return path


def _read_label_py(path):
    return read_label(path_str(path))


def decode_image_tf(contents):
    """Encoded JPEG/PNG bytes (tf.string scalar) -> uint8 [H, W, 3] RGB."""
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8,
                               expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_label_tf(path, kind, kinds_present=tuple(LabelKind)):
    """Decode a label file inside a tf.data map.

    Args:
      path: tf.string scalar, the label file.
      kind: int32 scalar `LabelKind` (from `inspect_label`).
      kinds_present: the kinds that occur in the dataset; only their decoders
        are built, so a dataset without `.mat` / odd palettes has no
        `tf.numpy_function` (and no Python in the loop).

    Returns:
      (ids uint8 [H, W], ok bool scalar: False if an RGB colour is not in the
      VOC map).
    """
    import tensorflow as tf

    def index():
        lab = tf.io.decode_png(tf.io.read_file(path), channels=1)[..., 0]
        return lab, tf.constant(True)

    def colour():
        ids = colours_to_ids(tf.io.decode_png(tf.io.read_file(path), channels=3))
        return tf.cast(tf.minimum(ids, 255), tf.uint8), tf.reduce_all(ids < 256)

    def python():
        lab = tf.numpy_function(_read_label_py, [path], tf.uint8, stateful=False)
        return tf.reshape(lab, tf.shape(lab)[:2]), tf.constant(True)

    fns = {LabelKind.INDEX: index, LabelKind.COLOUR: colour, LabelKind.PYTHON: python}
    lab, ok = switch_by_kind(fns, kind, kinds_present)
    lab = tf.ensure_shape(lab, [None, None])
    return lab, ok


def switch_by_kind(fns, kind, kinds_present):
    """Run the decoder of `kind` inside a tf.data map, building only those present.

    Shared by the VOC labels (`LabelKind`) and your own data's masks
    (`custom.MaskKind`).

    Args:
      fns: {kind int: function of no arguments returning the decoded tensors}.
      kind: int32 scalar tensor, the kind of this file.
      kinds_present: the kinds of the dataset; with one kind its decoder is
        called alone (no switch in the graph).

    Returns:
      what the chosen function returns.
    """
    import tensorflow as tf

    kinds = sorted(set(int(k) for k in kinds_present))
    if len(kinds) == 1:
        return fns[kinds[0]]()
    # switch_case wants branch keys 0..n-1, so switch on the kind's position in
    # `kinds` (e.g. VOC palette PNGs + SBD .mat are kinds {1, 2}).
    position = tf.argmax(tf.cast(tf.equal(tf.constant(kinds, tf.int32),
                                          tf.cast(kind, tf.int32)), tf.int32),
                         output_type=tf.int32)
    return tf.switch_case(position, branch_fns=[fns[k] for k in kinds])


def check_example_tf(image, label, name, num_classes, colour_ok=None):
    """Assert image/label sizes agree and label values are valid, naming the file.

    Args:
      image: uint8 [H, W, 3].
      label: uint8 [H, W].
      name: tf.string scalar used in messages (the label / image path).
      num_classes: int.
      colour_ok: optional bool scalar from `decode_label_tf`.

    Returns:
      (image, label) with the assertions as control dependencies.
    """
    import tensorflow as tf

    asserts = [
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(label))),
            ["Image and label sizes differ:", name, "image HxW", tf.shape(image)[:2],
             "label HxW", tf.shape(label)]),
    ]
    if colour_ok is not None:
        asserts.append(tf.debugging.Assert(
            colour_ok, ["Label has colours that are not in the VOC colour map:", name]))
    bad = tf.logical_and(label >= num_classes, label != IGNORE_LABEL)
    asserts.append(tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"Label values outside [0, {num_classes}) and {IGNORE_LABEL} (the ignore "
         f"label) in", name, "bad values:",
         tf.unique(tf.boolean_mask(tf.reshape(label, [-1]), tf.reshape(bad, [-1])))[0]],
        summarize=16))
    with tf.control_dependencies(asserts):
        return tf.identity(image), tf.identity(label)
