"""Your own data: folders of images and masks, detected by layout, with class tables.

`open_dataset(root)` recognises four layouts (`detect_layout`):

  "folders"  `images/` + `masks/` with the same file stems, split by
             `train.txt` / `val.txt` (/ `test.txt`) beside them, or by
             `images/train/` + `masks/train/` (or `train/images/` +
             `train/masks/`) subfolders; with neither, a seeded 90/10 split
             (`SPLIT_SEED`, `VAL_FRACTION`, stated in `Dataset.split_note`).
             Optional class table beside them: `labelmap.txt`, `class_dict.csv`,
             `_classes.csv` or `classes.txt`.
  "voc_export"  a VOC-like export of a labelling tool (CVAT "Segmentation mask
             1.1", Label Studio, Roboflow as VOC): `JPEGImages/`,
             `SegmentationClass/`, `ImageSets/Segmentation/*.txt`, and a
             `labelmap.txt` (`name:r,g,b::`) or `_classes.csv`. A single list
             (CVAT's `default.txt`) gets the seeded 90/10 split.
  "roboflow" Roboflow's "Semantic Segmentation Masks": `train/`, `valid/`,
             `test/`, each with `<stem>.jpg`, `<stem>_mask.png` and
             `_classes.csv` (`Pixel Value, Class`). Split "val" reads `valid/`.
  "camvid"   `train/`, `train_labels/`, `val/`, `val_labels/` (`test*`) and a
             `class_dict.csv` (`name,r,g,b`); labels `<stem>_L.png` or `<stem>.png`.

A VOCdevkit (`VOC2012/` with `ImageSets/Segmentation/train.txt` and no class
table) is not one of these: `deeplab_keras.data.voc` reads it.

Masks (`ClassTable`):
- index PNGs (8-bit grey "L", or palette "P" whose palette index is the value),
  value -> class through the table's pixel values (the row order of
  `labelmap.txt` / `class_dict.csv` / `classes.txt`, the `Pixel Value` column of
  `_classes.csv`), or value = class id without a table (num_classes = the
  largest value + 1 over all splits);
- RGB colour masks (and palette PNGs in a dataset whose table has colours),
  mapped through the table's colours.
Class ids follow the table's row order, skipping rows named in
`ignore_classes` (`void`, `unlabelled`, ... by default): their pixels become the
ignore label 255, as do pixels equal to `ignore_value` in index masks (255 by
default; None: no value is ignored). A colour or value that is not in the table
is an error naming the file, the colour and its pixel count, unless
`unknown_color="ignore"` maps it to 255 too. Everything downstream (pipeline,
loss, metrics) sees class ids in [0, C) and 255.

`Dataset.pixel_counts(split)` decodes every mask once (threads, cached per
process) for the class-frequency table, the class weights (`class_weights`)
and the checks before training (`frequency_report`).

Example:
    >>> from deeplab_keras.data import custom, make_dataset
    >>> ds = custom.open_dataset("~/data/camvid")
    >>> ds.layout, ds.num_classes, ds.class_names[:3]
    ('camvid', 31, ('Animal', 'Archway', 'Bicyclist'))
    >>> train = make_dataset("~/data/camvid", "train", training=True, batch_size=8)
"""

import concurrent.futures
import csv
import dataclasses
import enum
import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_keras.data import decode as dec
from deeplab_keras.data.decode import DataError
from deeplab_keras.data.voc import Example
from deeplab_keras.palette import IGNORE_LABEL, VOC_PALETTE

LAYOUTS = ("folders", "voc_export", "roboflow", "camvid")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_IGNORE_CLASSES = ("void", "unlabelled", "unlabeled", "ignore", "__ignore__")
UNKNOWN_COLOR_MODES = ("error", "ignore")
SPLIT_SEED = 0
VAL_FRACTION = 0.1
TABLE_FILES = ("labelmap.txt", "class_dict.csv", "_classes.csv", "classes.txt")
DOMINANT_CLASS_FRACTION = 0.95
_UNKNOWN = -1


# ---------------------------------------------------------------------------
# Class tables

@dataclasses.dataclass(frozen=True)
class ClassRow:
    """One row of a class table: its name, pixel value in index masks, colour."""

    name: str
    value: int
    color: tuple | None
    line: int


def _table_error(path, line, message):
    return DataError(f"{path}:{line}: {message}")


def _parse_rgb(text, path, line):
    parts = [p.strip() for p in text.split(",")]
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise _table_error(path, line, f"expected a colour r,g,b with values 0-255. "
                           f"Received: {text!r}")
    return rgb


def read_labelmap(path):
    """CVAT / Label Studio `labelmap.txt`: `name:r,g,b:parts:actions` per line.

    Lines starting with `#` are comments. A row's pixel value (for grey masks)
    is its position among the rows, as CVAT documents.
    """
    path = Path(path)
    rows = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 2 or not fields[0].strip():
            raise _table_error(path, lineno, f"expected 'name:r,g,b::'. Received: {raw!r}")
        rows.append(ClassRow(fields[0].strip(), len(rows),
                             _parse_rgb(fields[1], path, lineno), lineno))
    return rows


def _csv_rows(path):
    with open(path, newline="") as f:
        text = f.read()
    reader = csv.reader(io.StringIO(text))
    return [(i, [c.strip() for c in row]) for i, row in enumerate(reader, 1)
            if any(c.strip() for c in row)]


def read_class_dict(path):
    """CamVid-style `class_dict.csv`: header `name,r,g,b`, one class per row."""
    path = Path(path)
    rows = _csv_rows(path)
    if not rows:
        raise DataError(f"{path} is empty: expected a header name,r,g,b and one row per class")
    header = [h.lower() for h in rows[0][1]]
    try:
        cols = [header.index(k) for k in ("name", "r", "g", "b")]
    except ValueError:
        raise _table_error(path, rows[0][0], f"expected the header name,r,g,b. "
                           f"Received: {','.join(rows[0][1])!r}") from None
    out = []
    for lineno, row in rows[1:]:
        if len(row) < len(header):
            raise _table_error(path, lineno, f"expected {len(header)} fields. Received: {row}")
        out.append(ClassRow(row[cols[0]], len(out),
                            _parse_rgb(",".join(row[c] for c in cols[1:]), path, lineno),
                            lineno))
    return out


def read_roboflow_classes(path):
    """Roboflow `_classes.csv`: header `Pixel Value, Class`, the value of each class."""
    path = Path(path)
    rows = _csv_rows(path)
    if not rows:
        raise DataError(f"{path} is empty: expected a header 'Pixel Value, Class'")
    header = [h.lower() for h in rows[0][1]]
    if "pixel value" not in header or "class" not in header:
        raise _table_error(path, rows[0][0], "expected the header 'Pixel Value, Class'. "
                           f"Received: {', '.join(rows[0][1])!r}")
    vcol, ncol = header.index("pixel value"), header.index("class")
    out = []
    for lineno, row in rows[1:]:
        try:
            value = int(row[vcol])
        except (ValueError, IndexError):
            raise _table_error(path, lineno, f"expected '<pixel value>, <class>'. "
                               f"Received: {row}") from None
        if not 0 <= value <= 255:
            raise _table_error(path, lineno, f"pixel value must be 0-255. Received: {value}")
        out.append(ClassRow(row[ncol], value, None, lineno))
    return out


def read_classes_txt(path):
    """`classes.txt`: one class name per line; the line order is the pixel value."""
    path = Path(path)
    names = [(i, line.strip()) for i, line in enumerate(path.read_text().splitlines(), 1)
             if line.strip()]
    return [ClassRow(name, k, None, lineno) for k, (lineno, name) in enumerate(names)]


_READERS = {"labelmap.txt": read_labelmap, "class_dict.csv": read_class_dict,
            "_classes.csv": read_roboflow_classes, "classes.txt": read_classes_txt}


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """The classes of a dataset and how mask pixels map to them.

    Attributes:
      names: tuple[str], the C trained classes in class-id order.
      colors: tuple of C (r, g, b), or None when the table has no colours.
      ignored: tuple[str], table rows whose pixels are ignored (255).
      source: the table file (None: no table, values are class ids).
      value_lut: int16 [256], pixel value of an index mask -> class id, 255
        (ignore) or -1 (not in the table).
      color_keys, color_ids: int32 [K] sorted packed colours r<<16|g<<8|b and
        their class id or 255 (empty without colours).
    """

    names: tuple
    colors: tuple | None
    ignored: tuple
    source: Path | None
    value_lut: np.ndarray = dataclasses.field(repr=False)
    color_keys: np.ndarray = dataclasses.field(repr=False)
    color_ids: np.ndarray = dataclasses.field(repr=False)

    @property
    def num_classes(self):
        return len(self.names)

    def colors_to_ids(self, packed):
        """int32 [...] packed colours r<<16|g<<8|b -> int16 [...] class id / 255 / -1.

        A binary search in the sorted table, as `decode_label_tf` does in TF.
        """
        packed = np.asarray(packed, np.int32)
        if self.color_keys.size == 0:
            return np.full(packed.shape, _UNKNOWN, np.int16)
        pos = np.minimum(np.searchsorted(self.color_keys, packed), self.color_keys.size - 1)
        return np.where(self.color_keys[pos] == packed, self.color_ids[pos],
                        _UNKNOWN).astype(np.int16)


def _pack(rgb):
    rgb = np.asarray(rgb, np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def build_table(rows, source, *, ignore_classes=DEFAULT_IGNORE_CLASSES,
                ignore_value=IGNORE_LABEL):
    """A `ClassTable` from parsed rows: ids in row order, ignored rows skipped.

    Raises:
      DataError: no classes, a duplicate name, colour or pixel value (naming the
        file, the lines and the value), or a row whose value is the ignore value.
    """
    if not rows:
        raise DataError(f"The class table {source} lists no classes.")
    ignore = {n.strip().lower() for n in ignore_classes}
    seen_names, seen_colors, seen_values = {}, {}, {}
    names, colors, ignored = [], [], []
    lut = np.full(256, _UNKNOWN, np.int16)
    keys, ids = [], []
    for row in rows:
        low = row.name.lower()
        if low in seen_names:
            raise _table_error(source, row.line, f"class name {row.name!r} appears twice "
                               f"(also line {seen_names[low]}).")
        seen_names[low] = row.line
        if row.color is not None:
            if row.color in seen_colors:
                other = seen_colors[row.color]
                raise _table_error(
                    source, row.line, f"colour {row.color} of class {row.name!r} is also the "
                    f"colour of {other.name!r} (line {other.line}); each class needs its "
                    "own colour.")
            seen_colors[row.color] = row
        if row.value in seen_values:
            raise _table_error(source, row.line, f"pixel value {row.value} of class "
                               f"{row.name!r} is also that of {seen_values[row.value].name!r}.")
        seen_values[row.value] = row
        if low in ignore:
            class_id = IGNORE_LABEL
            ignored.append(row.name)
        else:
            class_id = len(names)
            names.append(row.name)
            colors.append(row.color)
            if ignore_value is not None and row.value == ignore_value:
                raise _table_error(
                    source, row.line, f"pixel value {row.value} of class {row.name!r} is the "
                    f"ignore value {ignore_value}; set another ignore value "
                    "(--ignore-value, or none) or declare the class as ignored.")
        lut[row.value] = class_id
        if row.color is not None:
            keys.append(int(_pack(row.color)))
            ids.append(class_id)
    if not names:
        raise DataError(f"The class table {source} has only ignored classes ({ignored}).")
    if len(names) > IGNORE_LABEL:
        raise DataError(f"The class table {source} has {len(names)} classes; at most "
                        f"{IGNORE_LABEL} fit in 8-bit labels with {IGNORE_LABEL} = ignore.")
    if ignore_value is not None and lut[ignore_value] == _UNKNOWN:
        lut[ignore_value] = IGNORE_LABEL
    has_colors = all(c is not None for c in colors)
    order = np.argsort(np.asarray(keys, np.int64), kind="stable")
    return ClassTable(
        names=tuple(names), colors=tuple(colors) if has_colors else None,
        ignored=tuple(ignored), source=Path(source) if source else None, value_lut=lut,
        color_keys=np.asarray(keys, np.int32)[order],
        color_ids=np.asarray(ids, np.int16)[order])


def identity_table(num_classes, ignore_value=IGNORE_LABEL, colors=None):
    """The table of index masks without a class table: value = class id."""
    lut = np.full(256, _UNKNOWN, np.int16)
    lut[:num_classes] = np.arange(num_classes)
    if ignore_value is not None:
        lut[ignore_value] = IGNORE_LABEL
    return ClassTable(names=tuple(f"class_{i}" for i in range(num_classes)),
                      colors=colors, ignored=(), source=None, value_lut=lut,
                      color_keys=np.zeros([0], np.int32), color_ids=np.zeros([0], np.int16))


def read_table(path, **kwargs):
    """Read and check a class table file (its kind from its name)."""
    path = Path(path)
    reader = _READERS.get(path.name)
    if reader is None:
        raise ValueError(f"Unknown class table {path.name}: expected one of {TABLE_FILES}")
    return build_table(reader(path), path, **kwargs)


# ---------------------------------------------------------------------------
# Mask decoding

class MaskKind(enum.IntEnum):
    """How a mask file is decoded: grey values, palette indices (PIL) or colours."""

    INDEX = 0
    PALETTE = 1
    COLOUR = 2


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


@dataclasses.dataclass
class Dataset:
    """A dataset on disk in one of `LAYOUTS` (use `open_dataset`).

    Attributes:
      root: its directory.
      layout: one of LAYOUTS.
      splits: {split name: [Example]} ("train", "val", "test", ...).
      split_note: how the splits were made (file lists, folders, or the seeded
        90/10 split with its seed).
      ignore_value, unknown_color, ignore_classes: the mask options.
    """

    root: Path
    layout: str
    splits: dict
    split_note: str
    table_rows: list | None
    table_file: Path | None
    ignore_value: int | None = IGNORE_LABEL
    unknown_color: str = "error"
    ignore_classes: tuple = DEFAULT_IGNORE_CLASSES
    _table: ClassTable | None = dataclasses.field(default=None, repr=False)

    # -- classes ----------------------------------------------------------
    @property
    def table(self):
        """The `ClassTable` (for index masks without a table file, built from a
        scan of every mask: num_classes = the largest value + 1)."""
        if self._table is None:
            if self.table_rows is not None:
                self._table = build_table(self.table_rows, self.table_file,
                                          ignore_classes=self.ignore_classes,
                                          ignore_value=self.ignore_value)
            else:
                self._table = self._infer_table()
        return self._table

    @property
    def num_classes(self):
        return self.table.num_classes

    @property
    def class_names(self):
        return self.table.names

    @property
    def class_colors(self):
        """uint8 [C, 3]: the table's colours, else the masks' palette, else VOC's."""
        colors = self.table.colors
        if colors is None:
            return VOC_PALETTE[: self.num_classes].copy()
        return np.asarray(colors, np.uint8)

    def examples(self, split):
        """The `Example`s of a split, in a fixed order."""
        if split not in self.splits:
            raise ValueError(f"Split {split!r} is not in the {self.layout} dataset at "
                             f"{self.root} (splits: {', '.join(self.splits)}). "
                             f"Received: split={split!r}")
        return list(self.splits[split])

    def all_examples(self):
        seen, out = set(), []
        for exs in self.splits.values():
            for ex in exs:
                if ex.label_path not in seen:
                    seen.add(ex.label_path)
                    out.append(ex)
        return out

    # -- masks --------------------------------------------------------------
    def mask_kind(self, mode, path):
        """`MaskKind` for a mask PIL mode (from the header), or DataError."""
        table_colors = self.table_rows is not None and all(
            r.color is not None for r in self.table_rows)
        if mode == "L":
            return MaskKind.INDEX
        if mode == "P":
            return MaskKind.COLOUR if table_colors else MaskKind.PALETTE
        if mode == "RGB":
            if not table_colors:
                raise DataError(
                    f"Mask {path} is an RGB colour mask but the dataset has no colour table "
                    f"({self.table_file or 'none found'}): add a labelmap.txt "
                    "(name:r,g,b::) or class_dict.csv (name,r,g,b) listing each class "
                    "colour, or save masks as 8-bit index PNGs (value = class id).")
            return MaskKind.COLOUR
        raise DataError(
            f"Mask PNG mode {mode!r} is not supported: masks must be 8-bit grey or palette "
            f"PNGs (value = class) or RGB colour masks with a colour table: {path}")

    def inspect(self, example, max_image_pixels=dec.DEFAULT_MAX_IMAGE_PIXELS):
        """Header checks of an example; returns its `MaskKind` (DataError if bad)."""
        ih, iw = dec.inspect_image(example.image_path, max_image_pixels)
        mode, (lh, lw), _ = dec.inspect_label_header(example.label_path, max_image_pixels)
        if (lh, lw) != (ih, iw):
            raise DataError(f"Image and mask sizes differ: {example.image_path} is "
                            f"{ih}x{iw}, {example.label_path} is {lh}x{lw} (HxW)")
        return self.mask_kind(mode, example.label_path)

    def _raw(self, path):
        """(kind, raw uint8 [H, W] values or int32 [H, W] packed colours)."""
        path = os.fspath(path)
        mode, _, _ = dec.inspect_label_header(path, max_image_pixels=None)
        kind = self.mask_kind(mode, path)
        try:
            with Image.open(path) as im:
                if kind == MaskKind.COLOUR:
                    return kind, _pack(np.asarray(im.convert("RGB")))
                return kind, np.asarray(im, np.uint8)
        except OSError as e:
            raise DataError(f"Mask PNG is corrupt: {path} ({e})") from e

    def read_label(self, path, table=None):
        """The reference decoder: uint8 [H, W] class ids, 255 = ignore.

        Raises:
          DataError: a value / colour not in the table (unless unknown_color is
            "ignore"), naming the file, the colours and their pixel counts.
        """
        table = table or self.table
        kind, raw = self._raw(path)
        if kind == MaskKind.COLOUR:
            ids = table.colors_to_ids(raw)
        else:
            ids = table.value_lut[raw]
        unknown = ids == _UNKNOWN
        if unknown.any():
            if self.unknown_color != "ignore":
                vals, counts = np.unique(raw[unknown], return_counts=True)
                order = np.argsort(-counts, kind="stable")
                found = [(int(vals[i]), int(counts[i])) for i in order]
                raise DataError(_unknown_message(
                    path, "colour" if kind == MaskKind.COLOUR else "value", found, table,
                    int(unknown.sum())))
            ids = np.where(unknown, IGNORE_LABEL, ids)
        return ids.astype(np.uint8)

    def _histogram(self, path):
        """Class-id histogram int64 [256] of one mask (index 255: ignored pixels)."""
        ids = self.read_label(path).astype(np.int64)
        return np.bincount(ids.ravel(), minlength=256)

    def pixel_counts(self, split=None, workers=None):
        """int64 [N, 256] class-id pixel counts per example (column 255 = ignored).

        Args:
          split: a split name, or None for every example.
          workers: decoding threads (default: the CPU count).

        Decodes each mask once per process (cached by file, size and mtime).
        """
        examples = self.all_examples() if split is None else self.examples(split)
        t = self.table
        fingerprint = hash((str(t.source), t.names, t.value_lut.tobytes(),
                            t.color_keys.tobytes(), t.color_ids.tobytes(), self.unknown_color))
        keys = []
        for ex in examples:
            st = os.stat(ex.label_path)
            keys.append((ex.label_path, st.st_size, st.st_mtime_ns, fingerprint))
        todo = [(i, ex) for i, (ex, k) in enumerate(zip(examples, keys)) if k not in _CACHE]
        if todo:
            with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
                for (i, ex), hist in zip(todo, pool.map(lambda t: self._histogram(
                        t[1].label_path), todo)):
                    _CACHE[keys[i]] = hist
        if not examples:
            return np.zeros([0, 256], np.int64)
        return np.stack([_CACHE[k] for k in keys])

    def _infer_table(self):
        """Index masks without a table: scan every mask's values (once per process
        for the same files and ignore value)."""
        examples = self.all_examples()
        key = (self.ignore_value, tuple(
            (ex.label_path, os.stat(ex.label_path).st_size, os.stat(ex.label_path).st_mtime_ns)
            for ex in examples))
        if key not in _INFERRED:
            _INFERRED[key] = self._scan_table(examples)
        return _INFERRED[key]

    def _scan_table(self, examples):
        provisional = identity_table(255, self.ignore_value)
        counts = np.zeros(256, np.int64)
        palette = None
        kinds = set()
        for ex in examples:
            kind, raw = self._raw(ex.label_path)
            kinds.add(kind)
            counts += np.bincount(raw.ravel(), minlength=256)
            if kind == MaskKind.PALETTE and palette is None:
                with Image.open(ex.label_path) as im:
                    pal = im.getpalette()
                if pal:
                    palette = np.asarray(pal, np.uint8).reshape(-1, 3)
        values = np.flatnonzero(counts)
        labelled = [int(v) for v in values if provisional.value_lut[v] != IGNORE_LABEL]
        if not labelled:
            raise DataError(f"Every mask pixel of {self.root} is the ignore value "
                            f"{self.ignore_value}: nothing to learn.")
        if self.ignore_value is None and IGNORE_LABEL in labelled:
            raise DataError(f"Masks in {self.root} hold the value {IGNORE_LABEL}, which "
                            "cannot be a class id (8-bit labels): set --ignore-value 255 or "
                            "give a _classes.csv mapping it to a class.")
        num_classes = max(labelled) + 1
        colors = None
        if palette is not None and len(palette) >= num_classes:
            colors = tuple(tuple(int(v) for v in c) for c in palette[:num_classes])
        table = identity_table(num_classes, self.ignore_value, colors)
        if len(set(colors or ())) != len(colors or ()):
            table = dataclasses.replace(table, colors=None)
        return table

    # -- reports ------------------------------------------------------------
    def describe(self):
        """A few lines: layout, table, classes, ignore rules, splits."""
        t = self.table
        lines = [f"[data] {self.root}: layout {self.layout!r}, {t.num_classes} classes "
                 f"from {t.source or 'the mask values (no class table)'}"]
        lines.append("[data] classes: " + ", ".join(f"{i}={n}" for i, n in enumerate(t.names)))
        ignore = ([f"value {self.ignore_value} (index masks)"] if self.ignore_value is not None
                  else [])
        ignore += [f"class {n!r}" for n in t.ignored]
        if self.unknown_color == "ignore":
            ignore.append("colours/values not in the table")
        lines.append("[data] ignored (label 255): " + (", ".join(ignore) or "nothing"))
        lines.append("[data] splits: " + ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
                     + f" ({self.split_note})")
        return "\n".join(lines)


_CACHE = {}
_INFERRED = {}


# ---------------------------------------------------------------------------
# Layout detection and listing

def _images_in(directory):
    """{stem: path} of the image files directly in `directory` (sorted)."""
    out = {}
    for p in sorted(Path(directory).iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in out:
                raise DataError(f"Two images with the stem {p.stem!r}: {out[p.stem]} and {p}; "
                                "an image and its mask are matched by stem.")
            out[p.stem] = p
    return out


def _masks_in(directory, suffix=""):
    """{image stem: mask path} of the mask files in `directory` named <stem><suffix>.<ext>."""
    out = {}
    for p in sorted(Path(directory).iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        ext = p.suffix.lower()
        if ext not in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"):
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


def _pair(images, masks, image_dir, mask_dir, what=""):
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


def _require_images(images, directory):
    if not images:
        raise DataError(f"No images found in {directory} (expected "
                        f"{', '.join(IMAGE_SUFFIXES)} files).")


def seeded_split(examples, seed=SPLIT_SEED, val_fraction=VAL_FRACTION):
    """(train, val): a reproducible random split of examples sorted by name.

    val gets round(val_fraction * n) examples (at least 1 when n >= 2).
    """
    examples = sorted(examples, key=lambda e: e.name)
    n = len(examples)
    n_val = max(1 if n >= 2 else 0, int(round(val_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val


def _split_note_seeded(n_train, n_val):
    return (f"no split lists or split folders: seeded random split, seed {SPLIT_SEED}, "
            f"{int(round(100 * (1 - VAL_FRACTION)))}/{int(round(100 * VAL_FRACTION))} -> "
            f"{n_train} train, {n_val} val")


def _read_names(path):
    names = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 1:
            raise DataError(f"{path}:{lineno}: expected one image name per line. "
                            f"Received: {line!r}")
        name = parts[0]
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            name = Path(name).stem
        names.append(Path(name).name)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path} lists names more than once: {dup[:5]}")
    return names


def _from_lists(pairs, lists, root):
    by_name = {e.name: e for e in pairs}
    splits = {}
    for split, path in lists.items():
        names = _read_names(path)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(f"{path} lists {len(missing)} name(s) with no image/mask pair in "
                            f"{root}: {missing[:5]}")
        splits[split] = [by_name[n] for n in names]
    return splits


def _find_table(*dirs):
    for d in dirs:
        for name in TABLE_FILES:
            if (Path(d) / name).is_file():
                return Path(d) / name
    return None


def _list_folders(root):
    split_dirs = [s for s in ("train", "val", "test")
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
            images = _images_in(idir)
            _require_images(images, idir)
            splits[s] = _pair(images, _masks_in(mdir), idir, mdir)
        return splits, f"split folders {', '.join(split_dirs)}"
    idir, mdir = root / "images", root / "masks"
    images = _images_in(idir)
    _require_images(images, idir)
    if not mdir.is_dir():
        raise DataError(f"{idir} has no mask folder {mdir} (masks/ beside images/, same "
                        "file stems).")
    pairs = _pair(images, _masks_in(mdir), idir, mdir)
    lists = {s: root / f"{s}.txt" for s in ("train", "val", "test") if (root / f"{s}.txt").is_file()}
    if lists:
        return _from_lists(pairs, lists, root), "lists " + ", ".join(p.name for p in lists.values())
    train, val = seeded_split(pairs)
    return {"train": train, "val": val}, _split_note_seeded(len(train), len(val))


def _list_voc_export(root):
    seg = root / "SegmentationClass"
    jpeg = root / "JPEGImages"
    if not jpeg.is_dir():
        raise DataError(f"{root} has {seg} but no JPEGImages/ folder: export the images too "
                        "(CVAT: 'Save images').")
    images = _images_in(jpeg)
    _require_images(images, jpeg)
    masks = _masks_in(seg)
    lists_dir = root / "ImageSets" / "Segmentation"
    lists = {p.stem: p for p in sorted(lists_dir.glob("*.txt"))} if lists_dir.is_dir() else {}
    if lists:
        listed = set()
        for p in lists.values():
            listed.update(_read_names(p))
        images = {s: p for s, p in images.items() if s in listed}
        masks = {s: p for s, p in masks.items() if s in listed}
    pairs = _pair(images, masks, jpeg, seg)
    if "train" in lists:
        return (_from_lists(pairs, lists, root),
                "lists " + ", ".join(f"ImageSets/Segmentation/{p.name}" for p in lists.values()))
    train, val = seeded_split(pairs)
    source = (f"one list {', '.join(p.name for p in lists.values())}; " if lists else "")
    return {"train": train, "val": val}, source + _split_note_seeded(len(train), len(val))


def _list_roboflow(root):
    splits = {}
    for folder, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        d = root / folder
        if not d.is_dir():
            continue
        masks = _masks_in(d, suffix="_mask")
        images = {s: p for s, p in _images_in(d).items() if not s.endswith("_mask")}
        _require_images(images, d)
        splits[split] = _pair(images, masks, d, d, f" in {d}")
    return splits, "Roboflow folders " + ", ".join(splits)


def _list_camvid(root):
    splits = {}
    for split in ("train", "val", "test"):
        idir, ldir = root / split, root / f"{split}_labels"
        if not idir.is_dir():
            continue
        if not ldir.is_dir():
            raise DataError(f"{idir} has no label folder {ldir}.")
        images = _images_in(idir)
        _require_images(images, idir)
        masks = _masks_in(ldir, suffix="_L")
        if not masks:
            masks = _masks_in(ldir)
        splits[split] = _pair(images, masks, idir, ldir)
    if "train" not in splits:
        raise DataError(f"{root} has class_dict.csv but no train/ and train_labels/ folders.")
    return splits, "CamVid folders " + ", ".join(splits)


def is_vocdevkit(root):
    """True for a PASCAL VOCdevkit (read by `deeplab_keras.data.voc`), not a tool export."""
    root = Path(root).expanduser()
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if ((cand / "ImageSets" / "Segmentation" / "train.txt").is_file()
                and (cand / "SegmentationClass").is_dir() and (cand / "JPEGImages").is_dir()
                and _find_table(cand) is None):
            return True
    return False


def source_kind(root):
    """"voc" for a VOCdevkit (or something meant as one, so that its reader names
    what is missing), else the layout of `root` (`detect_layout`)."""
    root = Path(root).expanduser()
    if is_vocdevkit(root):
        return "voc"
    if not root.is_dir():
        raise FileNotFoundError(f"Data directory not found: {root}")
    if ((root / "VOC2012").is_dir() or (root / "VOCdevkit").is_dir()
            or ((root / "ImageSets").is_dir() and _find_table(root) is None)):
        return "voc"
    return detect_layout(root)


def detect_layout(root):
    """The layout name of `root` (one of LAYOUTS), or a DataError saying what was expected."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Data directory not found: {root}")
    if (root / "class_dict.csv").is_file() and (root / "train_labels").is_dir():
        return "camvid"
    if (root / "SegmentationClass").is_dir():
        return "voc_export"
    if any((root / s / "_classes.csv").is_file() for s in ("train", "valid", "test")):
        return "roboflow"
    if (root / "images").is_dir() or any((root / s / "images").is_dir()
                                         for s in ("train", "val", "test")):
        return "folders"
    entries = [p.name for p in sorted(root.iterdir())][:8]
    raise DataError(
        f"{root} is {'an empty folder' if not entries else 'not a dataset layout this reader knows'}"
        + (f" (it holds {entries})" if entries else "") + ". Expected one of: images/ + masks/ "
        "(same file stems; optional train.txt/val.txt or train/ val/ subfolders); a VOC-like "
        "export with JPEGImages/, SegmentationClass/, ImageSets/Segmentation/ and labelmap.txt "
        "or _classes.csv; Roboflow train/ valid/ with <name>_mask.png and _classes.csv; "
        "CamVid train/, train_labels/, val/, val_labels/ and class_dict.csv; or a VOCdevkit.")


def open_dataset(root, *, ignore_value=IGNORE_LABEL, unknown_color="error",
                 ignore_classes=DEFAULT_IGNORE_CLASSES):
    """Detect the layout of `root`, list its splits and read its class table.

    Args:
      root: the dataset directory.
      ignore_value: pixel value of index masks that means "ignore" (255), or None.
      unknown_color: "error" (default) or "ignore" for mask colours / values that
        are not in the class table.
      ignore_classes: table class names (case-insensitive) whose pixels are
        ignored instead of trained.

    Returns:
      `Dataset`. Files are listed (images and masks paired by stem) and the
      table is parsed, but masks are decoded only when needed (`pixel_counts`,
      `read_label`, and index masks without a table, whose class count is the
      largest value found).

    Raises:
      FileNotFoundError: `root` does not exist.
      DataError: unknown layout, empty folders, unpaired images / masks, a bad
        or duplicate-colour class table (each message names the file / value).
      ValueError: bad arguments.
    """
    if unknown_color not in UNKNOWN_COLOR_MODES:
        raise ValueError(f"unknown_color must be one of {UNKNOWN_COLOR_MODES}. "
                         f"Received: unknown_color={unknown_color!r}")
    if ignore_value is not None and (isinstance(ignore_value, bool)
                                     or not isinstance(ignore_value, (int, np.integer))
                                     or not 0 <= ignore_value <= 255):
        raise ValueError(f"ignore_value must be an int in [0, 255] or None. "
                         f"Received: ignore_value={ignore_value!r}")
    if isinstance(ignore_classes, str):
        ignore_classes = tuple(c for c in re.split(r"\s*,\s*", ignore_classes) if c)
    root = Path(root).expanduser()
    layout = detect_layout(root)
    if layout == "camvid":
        splits, note = _list_camvid(root)
        table_file = root / "class_dict.csv"
    elif layout == "voc_export":
        splits, note = _list_voc_export(root)
        table_file = _find_table(root)
        if table_file is None:
            raise DataError(f"{root} looks like a VOC-like export (SegmentationClass/) but has "
                            "no labelmap.txt or _classes.csv; without it the colours have no "
                            "class names (a plain VOCdevkit needs "
                            "ImageSets/Segmentation/train.txt).")
    elif layout == "roboflow":
        splits, note = _list_roboflow(root)
        table_file = next(root / s / "_classes.csv" for s in ("train", "valid", "test")
                          if (root / s / "_classes.csv").is_file())
    else:
        splits, note = _list_folders(root)
        table_file = _find_table(root)
    if not any(splits.values()):
        raise DataError(f"No images found in {root}.")
    rows = _READERS[table_file.name](table_file) if table_file is not None else None
    ds = Dataset(root=root, layout=layout, splits=splits, split_note=note, table_rows=rows,
                 table_file=table_file, ignore_value=ignore_value, unknown_color=unknown_color,
                 ignore_classes=tuple(ignore_classes))
    if rows is not None:
        ds.table  # check the table now (duplicate colours, names, values)
    return ds


# ---------------------------------------------------------------------------
# Class frequencies, weights and the checks before training

CLASS_WEIGHT_METHODS = ("none", "inverse_frequency", "median_frequency")


@dataclasses.dataclass
class FrequencyReport:
    """Pixel statistics of a split (masks at full resolution, before augmentation).

    Attributes:
      class_names: C names.
      pixels: int64 [C] labelled pixels per class.
      ignored: pixels labelled 255.
      images_with: int64 [C] images in which each class occurs.
      image_pixels_with: int64 [C] total labelled pixels of the images that
        contain each class (the median-frequency denominator).
      num_images: images counted.
    """

    class_names: tuple
    pixels: np.ndarray
    ignored: int
    images_with: np.ndarray
    image_pixels_with: np.ndarray
    num_images: int

    @property
    def fractions(self):
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros_like(self.pixels, np.float64)

    def dominant(self):
        """(name, fraction) of the largest class when it covers > 95 % of labelled pixels."""
        f = self.fractions
        i = int(np.argmax(f)) if f.size else 0
        if f.size and f[i] > DOMINANT_CLASS_FRACTION:
            return self.class_names[i], float(f[i])
        return None

    def table(self, weights=None):
        """The class-frequency table as text."""
        width = max([5] + [len(n) for n in self.class_names])
        head = f"{'id':>3}  {'class':<{width}}  {'pixels':>12}  {'share':>7}  {'images':>6}"
        if weights is not None:
            head += f"  {'weight':>8}"
        lines = [head, "-" * len(head)]
        for i, name in enumerate(self.class_names):
            row = (f"{i:>3}  {name:<{width}}  {int(self.pixels[i]):>12}  "
                   f"{100 * self.fractions[i]:>6.2f}%  {int(self.images_with[i]):>6}")
            if weights is not None:
                row += f"  {weights[i]:>8.4f}"
            lines.append(row)
        lines.append("-" * len(head))
        lines.append(f"{'':>3}  {'ignored':<{width}}  {self.ignored:>12}  (label 255, not "
                     f"counted in the shares; {self.num_images} images)")
        return "\n".join(lines)

    def to_dict(self, weights=None):
        return {"num_images": self.num_images, "ignored_pixels": int(self.ignored),
                "classes": [{"id": i, "name": n, "pixels": int(self.pixels[i]),
                             "fraction": float(self.fractions[i]),
                             "images": int(self.images_with[i]),
                             **({"weight": float(weights[i])} if weights is not None else {})}
                            for i, n in enumerate(self.class_names)]}


def frequency_report(dataset, split="train"):
    """The `FrequencyReport` of a split (decodes its masks once; unknown colours raise)."""
    counts = dataset.pixel_counts(split)
    c = dataset.num_classes
    per_image = counts[:, :c]
    present = per_image > 0
    labelled = per_image.sum(axis=1)
    return FrequencyReport(
        class_names=dataset.class_names, pixels=per_image.sum(axis=0),
        ignored=int(counts[:, IGNORE_LABEL].sum()), images_with=present.sum(axis=0),
        image_pixels_with=(present * labelled[:, None]).sum(axis=0),
        num_images=len(counts))


def class_weights(report, method):
    """Per-class loss weights from a `FrequencyReport`.

    Args:
      report: the train split's `FrequencyReport`.
      method: "none" (all 1); "inverse_frequency": w_c = 1 / (C f_c), f_c the
        class's share of labelled pixels (scikit-learn's "balanced": the
        pixel-weighted mean weight is 1); "median_frequency": w_c =
        median(freq) / freq_c with freq_c = pixels of c / pixels of the images
        containing c (Eigen & Fergus, ICCV 2015; SegNet and ENet on CamVid);
        or a sequence of C numbers >= 0.

    Returns:
      float64 [C]. Classes absent from the split get 0 (no pixel carries it).

    Raises:
      ValueError: unknown method, or a list of the wrong length / negative values.
    """
    c = len(report.class_names)
    if not isinstance(method, str):
        w = np.asarray(method, np.float64)
        if w.shape != (c,) or not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError(f"class_weights must be {c} finite numbers >= 0 (one per class: "
                             f"{', '.join(report.class_names)}). Received: {list(method)}")
        return w
    if method == "none":
        return np.ones(c)
    present = report.pixels > 0
    w = np.zeros(c)
    if method == "inverse_frequency":
        f = report.fractions
        w[present] = 1.0 / (c * f[present])
    elif method == "median_frequency":
        freq = report.pixels[present] / report.image_pixels_with[present]
        w[present] = np.median(freq) / freq
    else:
        raise ValueError(f"class_weights must be one of {CLASS_WEIGHT_METHODS} or a list of "
                         f"numbers. Received: class_weights={method!r}")
    return w


def parse_class_weights(text):
    """A `class_weights` config value: a method name, or a list of numbers >= 0.

    Raises:
      ValueError: neither, naming the value.
    """
    text = str(text).strip()
    if text.lower() in CLASS_WEIGHT_METHODS:
        return text.lower()
    try:
        values = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        values = []
    if not values or not all(0 <= v < float("inf") for v in values):
        raise ValueError(f"class_weights must be one of {CLASS_WEIGHT_METHODS} or a "
                         f"comma-separated list of numbers >= 0. Received: "
                         f"class_weights={text!r}")
    return values


def dominance_warning(report, split="train"):
    """The warning text when one class covers > 95 % of labelled pixels, else None."""
    dom = report.dominant()
    if dom is None:
        return None
    name, frac = dom
    return (f"WARNING: class {name!r} covers {100 * frac:.1f}% of the labelled pixels of the "
            f"{split} split. A model that predicts {name!r} everywhere scores "
            f"{100 * frac:.0f}% pixel accuracy, and that is where training on such data "
            "tends to stop (\"the model predicts only background\"). What to do: check that "
            "the masks hold class ids or table colours (a 0/255 mask marks its objects as "
            "ignored), use --class-weights median_frequency (or inverse_frequency), and judge "
            "the model by mean IoU, not pixel accuracy.")


def hex_colors(colors):
    """uint8 [C, 3] -> ("#rrggbb", ...), the config's `class_colors` form."""
    return tuple("#%02x%02x%02x" % tuple(int(v) for v in c) for c in np.asarray(colors))


def parse_hex_colors(colors):
    """("#rrggbb", ...) -> uint8 [C, 3]."""
    out = []
    for c in colors:
        m = re.fullmatch(r"#?([0-9a-fA-F]{6})", str(c).strip())
        if not m:
            raise ValueError(f"class colours are '#rrggbb' strings. Received: {c!r}")
        v = int(m.group(1), 16)
        out.append((v >> 16, (v >> 8) & 255, v & 255))
    return np.asarray(out, np.uint8).reshape(-1, 3)


CLASSES_FILE = "classes.json"


def write_classes_json(path, class_names, class_colors):
    """The class sidecar of a trained model: `{"class_names": [...], "class_colors":
    ["#rrggbb", ...]}`, written atomically (read back by `deeplab-predict`)."""
    from deeplab_keras.utils.atomic import atomic_write_text

    import json

    colors = np.asarray(class_colors, np.uint8).reshape(-1, 3)
    if len(colors) != len(class_names):
        raise ValueError(f"class_colors must have one colour per class ({len(class_names)}). "
                         f"Received: {len(colors)} colours")
    atomic_write_text(path, json.dumps({"class_names": list(class_names),
                                        "class_colors": list(hex_colors(colors))},
                                       indent=2) + "\n")
    return Path(path)


def read_classes_json(path):
    """(class names tuple, uint8 [C, 3] colours) of a `write_classes_json` file.

    Raises:
      ValueError: not such a file (names it).
    """
    import json

    path = Path(path)
    try:
        info = json.loads(path.read_text())
        names = tuple(str(n) for n in info["class_names"])
        colors = parse_hex_colors(info["class_colors"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a class sidecar (class_names, class_colors): "
                         f"{e}") from None
    if len(colors) != len(names):
        raise ValueError(f"{path}: {len(names)} class names but {len(colors)} colours.")
    return names, colors


# ---------------------------------------------------------------------------
# TensorFlow decoding (inside tf.data maps)

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
    ignore_unknown = dataset.unknown_color == "ignore"

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
            return tf.fill(tf.shape(packed), _UNKNOWN), packed
        flat = tf.reshape(packed, [1, -1])
        pos = tf.minimum(tf.searchsorted(keys[None], flat), tf.size(keys) - 1)[0]
        found = tf.equal(tf.gather(keys, pos), flat[0])
        out = tf.where(found, tf.gather(ids, pos), _UNKNOWN)
        return tf.reshape(out, tf.shape(packed)), packed

    fns = {MaskKind.INDEX: index, MaskKind.PALETTE: palette, MaskKind.COLOUR: colour}
    kinds = sorted(set(int(k) for k in kinds_present))
    if len(kinds) == 1:
        label, raw = fns[kinds[0]]()
    else:
        position = tf.argmax(tf.cast(tf.equal(tf.constant(kinds, tf.int32),
                                              tf.cast(kind, tf.int32)), tf.int32),
                             output_type=tf.int32)
        label, raw = tf.switch_case(position, branch_fns=[fns[k] for k in kinds])
    unknown = tf.equal(label, _UNKNOWN)
    if not ignore_unknown:
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
    if isinstance(path, np.ndarray):
        path = path.item()
    if isinstance(path, bytes):
        path = path.decode()
    with Image.open(path) as im:
        return np.asarray(im, np.uint8)
