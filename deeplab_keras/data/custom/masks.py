"""Mask decoding through a `ClassTable`: the reference (NumPy) and the tf.data one.

Masks:
- index PNGs (8-bit grey "L", or palette "P" whose palette index is the value),
  value -> class through the table's pixel values, or value = class id
  without a table (num_classes = the largest value + 1 over all splits,
  `scan_table`);
- RGB colour masks (and palette PNGs in a dataset whose table has colours),
  mapped through the table's colours.
A colour or value that is not in the table is an error naming the file, the
colour and its pixel count, unless `unknown_color="ignore"` maps it to 255.
"""

import enum
import os

import numpy as np
from PIL import Image

from deeplab_keras.data import decode as dec
from deeplab_keras.data.decode import DataError
from deeplab_keras.data.custom.tables import UNKNOWN, identity_table, pack_rgb
from deeplab_keras.palette import IGNORE_LABEL


class MaskKind(enum.IntEnum):
    """How a mask file is decoded: grey values, palette indices (PIL) or colours."""

    INDEX = 0
    PALETTE = 1
    COLOUR = 2


def mask_kind(mode, path, table_colors, table_file=None):
    """`MaskKind` for a mask PIL mode (from the header), or DataError.

    Args:
      mode: the PIL mode of the mask.
      path: the mask (for messages).
      table_colors: whether the dataset's class table has a colour per class.
      table_file: the table file (for messages), or None.
    """
    if mode == "L":
        return MaskKind.INDEX
    if mode == "P":
        return MaskKind.COLOUR if table_colors else MaskKind.PALETTE
    if mode == "RGB":
        if not table_colors:
            raise DataError(
                f"Mask {path} is an RGB colour mask but the dataset has no colour table "
                f"({table_file or 'none found'}): add a labelmap.txt "
                "(name:r,g,b::) or class_dict.csv (name,r,g,b) listing each class "
                "colour, or save masks as 8-bit index PNGs (value = class id).")
        return MaskKind.COLOUR
    raise DataError(
        f"Mask PNG mode {mode!r} is not supported: masks must be 8-bit grey or palette "
        f"PNGs (value = class) or RGB colour masks with a colour table: {path}")


def read_raw(path, table_colors, table_file=None):
    """(kind, raw uint8 [H, W] values or int32 [H, W] packed colours) of a mask."""
    path = os.fspath(path)
    mode, _, _ = dec.inspect_label_header(path, max_image_pixels=None)
    kind = mask_kind(mode, path, table_colors, table_file)
    try:
        with Image.open(path) as im:
            if kind == MaskKind.COLOUR:
                return kind, pack_rgb(np.asarray(im.convert("RGB")))
            return kind, np.asarray(im, np.uint8)
    except OSError as e:
        raise DataError(f"Mask PNG is corrupt: {path} ({e})") from e


def _fmt_rgb(key):
    key = int(key)
    return f"({key >> 16}, {(key >> 8) & 255}, {key & 255})"


def _unknown_message(path, what, found, table, total):
    # found: list of (value or packed colour, pixel count), largest first.
    shown = ", ".join(f"{_fmt_rgb(v) if what == 'colour' else v}: {n} px" for v, n in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    where = f"the class table {table.source}" if table.source else "[0, num_classes)"
    return (f"Mask {path} has {total} pixels whose {what} is not in {where}: {shown}{more}. "
            "Fix the mask or the table, or pass --unknown-color ignore "
            "(unknown_color='ignore') to treat them as ignored.")


def raw_to_ids(raw, kind, table, unknown_color, path):
    """The reference decoder's mapping: raw values / colours -> uint8 [H, W] ids.

    Raises:
      DataError: a value / colour not in the table (unless unknown_color is
        "ignore"), naming the file, the colours and their pixel counts.
    """
    ids = table.colors_to_ids(raw) if kind == MaskKind.COLOUR else table.value_lut[raw]
    unknown = ids == UNKNOWN
    if unknown.any():
        if unknown_color != "ignore":
            vals, counts = np.unique(raw[unknown], return_counts=True)
            order = np.argsort(-counts, kind="stable")
            found = [(int(vals[i]), int(counts[i])) for i in order]
            raise DataError(_unknown_message(
                path, "colour" if kind == MaskKind.COLOUR else "value", found, table,
                int(unknown.sum())))
        ids = np.where(unknown, IGNORE_LABEL, ids)
    return ids.astype(np.uint8)


def scan_table(label_paths, ignore_value, root):
    """The `ClassTable` of index masks without a table file, from their values.

    num_classes = the largest value found + 1 (the ignore value aside); the
    colours are the first palette mask's palette when it has distinct colours.

    Raises:
      DataError: every pixel is the ignore value, or a mask holds 255 while no
        value is ignored (255 cannot be a class id in 8-bit labels).
    """
    provisional = identity_table(255, ignore_value)
    counts = np.zeros(256, np.int64)
    palette = None
    for path in label_paths:
        kind, raw = read_raw(path, table_colors=False)
        counts += np.bincount(raw.ravel(), minlength=256)
        if kind == MaskKind.PALETTE and palette is None:
            with Image.open(path) as im:
                pal = im.getpalette()
            if pal:
                palette = np.asarray(pal, np.uint8).reshape(-1, 3)
    values = np.flatnonzero(counts)
    labelled = [int(v) for v in values if provisional.value_lut[v] != IGNORE_LABEL]
    if not labelled:
        raise DataError(f"Every mask pixel of {root} is the ignore value "
                        f"{ignore_value}: nothing to learn.")
    if ignore_value is None and IGNORE_LABEL in labelled:
        raise DataError(f"Masks in {root} hold the value {IGNORE_LABEL}, which "
                        "cannot be a class id (8-bit labels): set --ignore-value 255 or "
                        "give a _classes.csv mapping it to a class.")
    num_classes = max(labelled) + 1
    colors = None
    if palette is not None and len(palette) >= num_classes:
        colors = tuple(tuple(int(v) for v in c) for c in palette[:num_classes])
    if len(set(colors or ())) != len(colors or ()):
        colors = None
    return identity_table(num_classes, ignore_value, colors)


def decode_label_tf(dataset, path, kind, kinds_present):
    """Decode a mask in a tf.data map: uint8 [H, W] class ids, 255 = ignore.

    Unknown colours / values become 255 with unknown_color="ignore"; otherwise a
    `tf.debugging.Assert` fails with the file name, the first unknown colour
    (or the unknown values) and the unknown pixel count.

    Args:
      dataset: the `Dataset` (its `table` is baked in as constants).
      path: tf.string scalar.
      kind: int32 scalar `MaskKind`.
      kinds_present: the kinds in the split (only their decoders are built).
    """
    import tensorflow as tf

    table = dataset.table
    lut = tf.constant(table.value_lut.astype(np.int32))
    keys = tf.constant(table.color_keys.astype(np.int32))
    ids = tf.constant(table.color_ids.astype(np.int32))

    def by_value(values):
        return tf.gather(lut, tf.cast(values, tf.int32))

    def index():
        raw = tf.io.decode_png(tf.io.read_file(path), channels=1)[..., 0]
        return by_value(raw), tf.cast(raw, tf.int32)

    def palette():
        raw = tf.numpy_function(_read_palette_indices, [path], tf.uint8, stateful=False)
        raw = tf.reshape(raw, tf.shape(raw)[:2])
        return by_value(raw), tf.cast(raw, tf.int32)

    def colour():
        rgb = tf.cast(tf.io.decode_png(tf.io.read_file(path), channels=3), tf.int32)
        packed = rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
        if table.color_keys.size == 0:
            return tf.fill(tf.shape(packed), UNKNOWN), packed
        flat = tf.reshape(packed, [1, -1])
        pos = tf.minimum(tf.searchsorted(keys[None], flat), tf.size(keys) - 1)[0]
        found = tf.equal(tf.gather(keys, pos), flat[0])
        out = tf.where(found, tf.gather(ids, pos), UNKNOWN)
        return tf.reshape(out, tf.shape(packed)), packed

    fns = {MaskKind.INDEX: index, MaskKind.PALETTE: palette, MaskKind.COLOUR: colour}
    label, raw = dec.switch_by_kind(fns, kind, kinds_present)
    unknown = tf.equal(label, UNKNOWN)
    if dataset.unknown_color != "ignore":
        count = tf.reduce_sum(tf.cast(unknown, tf.int32))
        first = tf.boolean_mask(tf.reshape(raw, [-1]), tf.reshape(unknown, [-1]))[:1]
        rgb = tf.stack([first // 65536, (first // 256) % 256, first % 256], axis=-1)
        check = tf.debugging.Assert(
            tf.equal(count, 0),
            ["Mask has pixels whose colour/value is not in the class table",
             f"({table.source or '[0, num_classes)'}):", path, "unknown pixels:", count,
             "first unknown colour (R, G, B) or value:", rgb, first,
             "(pass --unknown-color ignore to treat them as ignored)"], summarize=8)
        with tf.control_dependencies([check]):
            label = tf.identity(label)
    label = tf.where(unknown, IGNORE_LABEL, label)
    return tf.ensure_shape(tf.cast(label, tf.uint8), [None, None])


def _read_palette_indices(path):
    with Image.open(dec.path_str(path)) as im:
        return np.asarray(im, np.uint8)
