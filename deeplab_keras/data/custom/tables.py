"""Class tables: the four table files, `ClassTable`, and the model's class sidecar.

Table files (their kind from their name, `TABLE_FILES`):
  labelmap.txt    CVAT / Label Studio, `name:r,g,b:parts:actions`; pixel value
                  = row position.
  class_dict.csv  CamVid, header `name,r,g,b`; pixel value = row position.
  _classes.csv    Roboflow, header `Pixel Value, Class`.
  classes.txt     one name per line; pixel value = line position.

Class ids follow the table's row order, skipping rows named in
`ignore_classes` (`DEFAULT_IGNORE_CLASSES`): their pixels become the ignore
label 255, as do pixels equal to `ignore_value` in index masks.
"""

import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np

from deeplab_keras.data.decode import DataError
from deeplab_keras.palette import IGNORE_LABEL
from deeplab_keras.utils.atomic import atomic_write_text

DEFAULT_IGNORE_CLASSES = ("void", "unlabelled", "unlabeled", "ignore", "__ignore__")
TABLE_FILES = ("labelmap.txt", "class_dict.csv", "_classes.csv", "classes.txt")
CLASSES_FILE = "classes.json"
UNKNOWN = -1  # value_lut / colors_to_ids entry of a value or colour not in the table


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


def _csv_columns(path, columns, header_text):
    """[(line number, [the named columns' fields])] of a CSV table with a header.

    Args:
      path: the CSV file.
      columns: the header names wanted (compared case-insensitively).
      header_text: the header as the error messages spell it.

    Raises:
      DataError: an empty file, a header without the columns, or a row with
        fewer fields than the header (naming the file and the line).
    """
    with open(path, newline="") as f:
        text = f.read()
    rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(io.StringIO(text)), 1)
            if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"{path} is empty: expected a header {header_text} and one row per class")
    header = [h.lower() for h in rows[0][1]]
    if not all(k in header for k in columns):
        raise _table_error(path, rows[0][0], f"expected the header {header_text}. "
                           f"Received: {','.join(rows[0][1])!r}")
    cols = [header.index(k) for k in columns]
    out = []
    for lineno, row in rows[1:]:
        if len(row) < len(header):
            raise _table_error(path, lineno, f"expected {len(header)} fields "
                               f"({header_text}). Received: {row}")
        out.append((lineno, [row[c] for c in cols]))
    return out


def read_class_dict(path):
    """CamVid-style `class_dict.csv`: header `name,r,g,b`, one class per row."""
    path = Path(path)
    return [ClassRow(name, k, _parse_rgb(f"{r},{g},{b}", path, lineno), lineno)
            for k, (lineno, (name, r, g, b)) in enumerate(
                _csv_columns(path, ("name", "r", "g", "b"), "name,r,g,b"))]


def read_roboflow_classes(path):
    """Roboflow `_classes.csv`: header `Pixel Value, Class`, the value of each class."""
    path = Path(path)
    out = []
    for lineno, (value, name) in _csv_columns(path, ("pixel value", "class"),
                                              "'Pixel Value, Class'"):
        try:
            value = int(value)
        except ValueError:
            raise _table_error(path, lineno, f"expected '<pixel value>, <class>'. "
                               f"Received: {[value, name]}") from None
        if not 0 <= value <= 255:
            raise _table_error(path, lineno, f"pixel value must be 0-255. Received: {value}")
        out.append(ClassRow(name, value, None, lineno))
    return out


def read_classes_txt(path):
    """`classes.txt`: one class name per line; the line order is the pixel value."""
    path = Path(path)
    names = [(i, line.strip()) for i, line in enumerate(path.read_text().splitlines(), 1)
             if line.strip()]
    return [ClassRow(name, k, None, lineno) for k, (lineno, name) in enumerate(names)]


READERS = {"labelmap.txt": read_labelmap, "class_dict.csv": read_class_dict,
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
            return np.full(packed.shape, UNKNOWN, np.int16)
        pos = np.minimum(np.searchsorted(self.color_keys, packed), self.color_keys.size - 1)
        return np.where(self.color_keys[pos] == packed, self.color_ids[pos],
                        UNKNOWN).astype(np.int16)


def pack_rgb(rgb):
    """uint8 [..., 3] -> int32 [...] packed colours r<<16|g<<8|b."""
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
    lut = np.full(256, UNKNOWN, np.int16)
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
            keys.append(int(pack_rgb(row.color)))
            ids.append(class_id)
    if not names:
        raise DataError(f"The class table {source} has only ignored classes ({ignored}).")
    if len(names) > IGNORE_LABEL:
        raise DataError(f"The class table {source} has {len(names)} classes; at most "
                        f"{IGNORE_LABEL} fit in 8-bit labels with {IGNORE_LABEL} = ignore.")
    if ignore_value is not None and lut[ignore_value] == UNKNOWN:
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
    lut = np.full(256, UNKNOWN, np.int16)
    lut[:num_classes] = np.arange(num_classes)
    if ignore_value is not None:
        lut[ignore_value] = IGNORE_LABEL
    return ClassTable(names=tuple(f"class_{i}" for i in range(num_classes)),
                      colors=colors, ignored=(), source=None, value_lut=lut,
                      color_keys=np.zeros([0], np.int32), color_ids=np.zeros([0], np.int16))


def read_table(path, **kwargs):
    """Read and check a class table file (its kind from its name)."""
    path = Path(path)
    reader = READERS.get(path.name)
    if reader is None:
        raise ValueError(f"Unknown class table {path.name}: expected one of {TABLE_FILES}")
    return build_table(reader(path), path, **kwargs)


# ---------------------------------------------------------------------------
# The class sidecar of a trained model (classes.json)

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


def write_classes_json(path, class_names, class_colors):
    """The class sidecar of a trained model: `{"class_names": [...], "class_colors":
    ["#rrggbb", ...]}`, written atomically (read back by `deeplab-predict`)."""
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
