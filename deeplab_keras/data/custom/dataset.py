"""`open_dataset`: detect the layout, list the splits, read the class table.

The layouts (one module each, with `detect(root)` and `read(root)`) are tried
in the order of `_DETECTION_ORDER`: CamVid's `class_dict.csv` + `train_labels/`
first, `images/` last, since a tool export may hold an `images/` folder too.
"""

import concurrent.futures
import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from deeplab_keras.data import decode as dec
from deeplab_keras.data.custom import camvid, folders, masks, roboflow, voc_export
from deeplab_keras.data.custom.files import find_table
from deeplab_keras.data.custom.tables import (DEFAULT_IGNORE_CLASSES, READERS, ClassTable,
                                              build_table)
from deeplab_keras.data.decode import DataError
from deeplab_keras.palette import IGNORE_LABEL, VOC_PALETTE

LAYOUTS = ("folders", "voc_export", "roboflow", "camvid")
_DETECTION_ORDER = (camvid, voc_export, roboflow, folders)
_BY_NAME = {m.NAME: m for m in _DETECTION_ORDER}
UNKNOWN_COLOR_MODES = ("error", "ignore")

_CACHE = {}  # (mask path, size, mtime, table fingerprint) -> class-id histogram
_INFERRED = {}  # (ignore value, mask files with size and mtime) -> ClassTable


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

    # -- masks (`masks`) --------------------------------------------------
    @property
    def _table_colors(self):
        return self.table_rows is not None and all(r.color is not None for r in self.table_rows)

    def mask_kind(self, mode, path):
        """`masks.MaskKind` for a mask PIL mode (from the header), or DataError."""
        return masks.mask_kind(mode, path, self._table_colors, self.table_file)

    def inspect(self, example, max_image_pixels=dec.DEFAULT_MAX_IMAGE_PIXELS):
        """Header checks of an example; returns its `MaskKind` (DataError if bad)."""
        ih, iw = dec.inspect_image(example.image_path, max_image_pixels)
        mode, (lh, lw), _ = dec.inspect_label_header(example.label_path, max_image_pixels)
        if (lh, lw) != (ih, iw):
            raise DataError(f"Image and mask sizes differ: {example.image_path} is "
                            f"{ih}x{iw}, {example.label_path} is {lh}x{lw} (HxW)")
        return self.mask_kind(mode, example.label_path)

    def read_label(self, path, table=None):
        """The reference decoder: uint8 [H, W] class ids, 255 = ignore.

        Raises:
          DataError: a value / colour not in the table (unless unknown_color is
            "ignore"), naming the file, the colours and their pixel counts.
        """
        table = table or self.table
        kind, raw = masks.read_raw(path, self._table_colors, self.table_file)
        return masks.raw_to_ids(raw, kind, table, self.unknown_color, path)

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
            def histogram(item):
                ids = self.read_label(item[1].label_path).astype(np.int64)
                return np.bincount(ids.ravel(), minlength=256)

            with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
                for (i, _), hist in zip(todo, pool.map(histogram, todo)):
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
            _INFERRED[key] = masks.scan_table([ex.label_path for ex in examples],
                                              self.ignore_value, self.root)
        return _INFERRED[key]

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


# ---------------------------------------------------------------------------
# Layout detection

def is_vocdevkit(root):
    """True for a PASCAL VOCdevkit (read by `deeplab_keras.data.voc`), not a tool export."""
    root = Path(root).expanduser()
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if ((cand / "ImageSets" / "Segmentation" / "train.txt").is_file()
                and (cand / "SegmentationClass").is_dir() and (cand / "JPEGImages").is_dir()
                and find_table(cand) is None):
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
            or ((root / "ImageSets").is_dir() and find_table(root) is None)):
        return "voc"
    return detect_layout(root)


def detect_layout(root):
    """The layout name of `root` (one of LAYOUTS), or a DataError saying what was expected."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Data directory not found: {root}")
    for layout in _DETECTION_ORDER:
        if layout.detect(root):
            return layout.NAME
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
    splits, note, table_file = _BY_NAME[layout].read(root)
    if not any(splits.values()):
        raise DataError(f"No images found in {root}.")
    rows = READERS[table_file.name](table_file) if table_file is not None else None
    ds = Dataset(root=root, layout=layout, splits=splits, split_note=note, table_rows=rows,
                 table_file=table_file, ignore_value=ignore_value, unknown_color=unknown_color,
                 ignore_classes=tuple(ignore_classes))
    if rows is not None:
        ds.table  # check the table now (duplicate colours, names, values)
    return ds
