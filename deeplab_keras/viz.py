"""Pictures of segmentations: colour maps, overlays, side-by-side figures, curves.

Everything here works on NumPy arrays:

- label maps are integer [H, W] class ids (VOC convention: 0 = background,
  255 = boundary / ignore), drawn with the VOC colour map
  (`deeplab_keras.palette.VOC_PALETTE`);
- images are RGB in 0-255, [H, W, 3] (uint8 or float).

Figures are built with matplotlib's object-oriented API (`matplotlib.figure.Figure`
rendered by the Agg canvas), never through pyplot, so the library neither needs a
display nor changes the backend of the program that imports it. matplotlib is
imported only when a figure is made; colour maps and overlays need only PIL.

Example:
  >>> import numpy as np
  >>> from deeplab_keras import viz
  >>> image = np.zeros((4, 4, 3), np.uint8)
  >>> labels = np.array([[0, 15], [15, 255]]).repeat(2, 0).repeat(2, 1)
  >>> viz.colorize(labels)[0, 2].tolist()     # person
  [192, 128, 128]
  >>> viz.overlay(image, labels, alpha=1.0)[0, 0].tolist()   # background stays the image
  [0, 0, 0]
"""

import contextlib
import csv
import math
import os
import uuid
from pathlib import Path

import numpy as np

from deeplab_keras.palette import IGNORE_LABEL, VOC_CLASSES, VOC_PALETTE

__all__ = [
    "colorize",
    "overlay",
    "label_image",
    "save_label_png",
    "side_by_side",
    "label_grid",
    "read_training_log",
    "plot_training_curves",
    "legend_image",
    "plot_confusion_matrix",
    "save_figure",
    "atomic_path",
]


# --------------------------------------------------------------------------- #
# Argument checks
# --------------------------------------------------------------------------- #

def _as_labels(labels, name="labels"):
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise ValueError(
            f"`{name}` must be a label map of shape [H, W]. Received: shape={labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(
            f"`{name}` must hold integer class ids (take the argmax of the logits first). "
            f"Received: dtype={labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(
            f"`{name}` must hold class ids in [0, 255]. "
            f"Received: min={labels.min()}, max={labels.max()}")
    return labels.astype(np.uint8)


def _as_image(image, name="image"):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"`{name}` must be an RGB image of shape [H, W, 3]. Received: shape={image.shape}")
    if image.dtype != np.uint8:
        # Float input is RGB in 0-255 (what `deprocess_images` returns); clip its
        # overshoot rather than wrap around.
        image = np.clip(np.rint(image.astype(np.float32)), 0, 255).astype(np.uint8)
    return image


def _as_palette(palette):
    if palette is None:
        return VOC_PALETTE
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] > 256:
        raise ValueError(
            f"`palette` must be [N, 3] RGB with N <= 256. Received: shape={palette.shape}")
    full = np.zeros((256, 3), np.uint8)
    full[: palette.shape[0]] = palette
    return full


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it to `path` on success.

    Writers save to the temporary name (same folder, so `os.replace` is atomic);
    an exception or a kill leaves any previous file at `path` untouched and no
    partial file under that name. New files get the usual umask permissions.

    Example:
      >>> from matplotlib.figure import Figure
      >>> fig = Figure()
      >>> with atomic_path("fig.png") as tmp:
      ...     fig.savefig(tmp, format="png")
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Output directory does not exist: {path.parent}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- #
# Colour maps and overlays (PIL / NumPy only)
# --------------------------------------------------------------------------- #

def colorize(labels, palette=None):
    """Colour a label map with the VOC colour map.

    Args:
      labels: integer [H, W] class ids in 0-255 (255 = ignore, drawn in its VOC
        colour, light beige).
      palette: optional uint8 [N, 3] RGB colours, N <= 256; defaults to
        `VOC_PALETTE`.

    Returns:
      uint8 [H, W, 3] RGB.

    Example:
      >>> colorize(np.array([[1]]))[0, 0].tolist()
      [128, 0, 0]
    """
    return _as_palette(palette)[_as_labels(labels)]


def overlay(image, labels, *, alpha=0.5, transparent_labels=(0,), palette=None):
    """Blend a label map's colours onto its image.

    Pixels whose label is in `transparent_labels` (by default the background)
    keep the image; the others become `(1 - alpha) * image + alpha * colour`.

    Args:
      image: RGB [H, W, 3] in 0-255 (uint8 or float) or grayscale [H, W].
      labels: integer [H, W] class ids, same H, W as the image.
      alpha: opacity of the colours, in [0, 1].
      transparent_labels: class ids drawn without colour.
      palette: optional [N, 3] colours (default: VOC).

    Returns:
      uint8 [H, W, 3] RGB.
    """
    image = _as_image(image)
    labels = _as_labels(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(
            "`image` and `labels` must have the same height and width. "
            f"Received: image.shape={image.shape}, labels.shape={labels.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
    from PIL import Image

    colours = _as_palette(palette)[labels]
    blended = np.asarray(Image.blend(Image.fromarray(image), Image.fromarray(colours),
                                     float(alpha)))
    keep = np.isin(labels, np.asarray(tuple(transparent_labels), np.int64))
    return np.where(keep[..., None], image, blended).astype(np.uint8)


def label_image(labels, palette=None):
    """A label map as a palette ("P" mode) PIL image: pixel value = class id.

    This is the format of VOC's SegmentationClass PNGs, so the files open in
    any viewer in colour and read back with `np.asarray(Image.open(f))` as ids.
    """
    from PIL import Image

    # An "L" image given a palette becomes "P" with its values kept as indices
    # (convert("P") would re-quantise them instead).
    image = Image.fromarray(_as_labels(labels))
    image.putpalette(_as_palette(palette).reshape(-1).tolist())
    assert image.mode == "P", image.mode
    return image


def save_label_png(labels, path, palette=None):
    """Write a label map as a VOC-style palette PNG, atomically.

    The file is written under a temporary name in the same folder and renamed,
    so an interrupted run never leaves a half-written PNG under `path`.

    Args:
      labels: integer [H, W] class ids in 0-255.
      path: destination `.png` path; its folder must exist.
      palette: optional [N, 3] colours (default: VOC).

    Returns:
      The `Path` written.
    """
    image = label_image(labels, palette)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def legend_image(class_names, palette=None, *, swatch=20):
    """A legend: one row per class, its colour swatch and "id name" (PIL only).

    Args:
      class_names: C names; class i is drawn in `palette[i]`.
      palette: optional [N >= C, 3] colours (default: VOC).
      swatch: swatch size in pixels.

    Returns:
      uint8 [C * (swatch + 4) + 4, W, 3] RGB on white.
    """
    from PIL import Image, ImageDraw

    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("class_names must not be empty. Received: []")
    colours = _as_palette(palette)
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [f"{i:>3} {n}" for i, n in enumerate(names)]
    text_w = max(int(draw_probe.textlength(t)) for t in texts)
    row = swatch + 4
    im = Image.new("RGB", (swatch + 16 + text_w, row * len(names) + 4), "white")
    draw = ImageDraw.Draw(im)
    for i, text in enumerate(texts):
        y = 4 + i * row
        draw.rectangle([4, y, 4 + swatch - 1, y + swatch - 1],
                       fill=tuple(int(v) for v in colours[i]), outline=(0, 0, 0))
        draw.text((swatch + 10, y + swatch // 2 - 5), text, fill=(0, 0, 0))
    return np.asarray(im)


# --------------------------------------------------------------------------- #
# Figures (matplotlib, imported lazily)
# --------------------------------------------------------------------------- #

def plot_confusion_matrix(confusion, class_names, *, path=None, title=None):
    """The confusion matrix with each row normalised to 1 (recall per class).

    Args:
      confusion: int [C, C], rows ground truth, columns prediction (as
        `EvalResult.confusion`).
      class_names: C names for both axes.
      path: if given, the figure is saved there (PNG by suffix), atomically.
      title: figure title.

    Returns:
      The matplotlib `Figure`. A row without ground-truth pixels is all 0.
    """
    cm = np.asarray(confusion, np.float64)
    names = [str(n) for n in class_names]
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(names):
        raise ValueError(f"confusion must be [C, C] with C = len(class_names) = {len(names)}. "
                         f"Received: shape={cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    c = len(names)
    side = max(4.0, 0.45 * c + 2.5)
    fig = _new_figure((side + 1.0, side))
    ax = fig.add_subplot()
    im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(c), names, rotation=90)
    ax.set_yticks(range(c), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if c <= 30:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the row")
    ax.set_title(title or "confusion matrix (rows normalised)")
    if path is not None:
        save_figure(fig, path)
    return fig


def _new_figure(figsize):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("Figures need matplotlib, which deeplab_keras does not install "
                          "by default: pip install matplotlib") from None

    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig, path, *, dpi=100):
    """Save a matplotlib figure to `path` atomically (PNG, PDF, SVG by suffix)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
    return path


def _batch(x, name, as_fn):
    """Normalise one item or a batch to a list of arrays checked by `as_fn`."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        items = list(x)
    else:
        x = np.asarray(x)
        batched = x.ndim == 4 if as_fn is _as_image else (
            x.ndim == 3 and x.shape[-1] != 1 or x.ndim == 4)
        items = list(x) if batched else [x]
    return [as_fn(item, name) for item in items]


def label_grid(images, columns, *, class_names=None, palette=None, style="labels",
               alpha=0.6, titles=None, legend=True, column_width=3.0):
    """A figure of label maps beside their images: one row per image, one column
    per entry of `columns` (after an "image" column).

    The general form of `side_by_side`, for any set of label maps, e.g. the
    masks of several export formats.

    Args:
      images: RGB [H, W, 3] in 0-255, or a batch [B, H, W, 3] / list of them
        (images of different sizes: a list).
      columns: dict column title -> label maps (integer [H, W], a batch
        [B, H, W] or a list), one per image, each the size of its image.
      class_names: names for the legend (default: the 21 VOC classes).
      palette: optional [N, 3] colours (default: VOC).
      style: "labels" (colour maps) or "overlay" (colours blended on the image).
      alpha: overlay opacity (style "overlay").
      titles: optional row titles (e.g. file names).
      legend: draw a legend of the classes that occur.
      column_width: inches per column.

    Returns:
      A `matplotlib.figure.Figure`.

    Example:
      >>> images = [np.zeros((8, 8, 3), np.uint8)]
      >>> keras_labels, tflite_labels = [np.eye(8, dtype=np.uint8)], [np.eye(8, dtype=np.uint8)]
      >>> fig = label_grid(images, {"Keras": keras_labels, "TFLite": tflite_labels})
    """
    if style not in ("labels", "overlay"):
        raise ValueError(f'`style` must be "labels" or "overlay". Received: style={style!r}')
    images = _batch(images, "images", _as_image)
    if not isinstance(columns, dict):
        raise ValueError("`columns` must be a dict of column title -> label maps. "
                         f"Received: {type(columns).__name__}")
    columns = [(str(title), _batch(maps, title, _as_labels)) for title, maps in columns.items()]
    n = len(images)
    if n == 0:
        raise ValueError("`images` is empty.")
    for title, maps in columns:
        if len(maps) != n:
            raise ValueError(
                f"Got {n} images but {len(maps)} label maps for column '{title}'.")
        for i, (img, lab) in enumerate(zip(images, maps)):
            if img.shape[:2] != lab.shape:
                raise ValueError(
                    f"Row {i}, column '{title}': label map shape {lab.shape} does not "
                    f"match image shape {img.shape[:2]}.")
    if titles is not None and len(titles) != n:
        raise ValueError(f"Got {n} images but {len(titles)} titles.")
    class_names = tuple(class_names) if class_names is not None else VOC_CLASSES
    pal = _as_palette(palette)

    ncols = 1 + len(columns)
    h, w = images[0].shape[:2]
    row_height = column_width * h / max(w, 1)
    fig = _new_figure((column_width * ncols, row_height * n + (0.6 if legend else 0.2)))
    axes = np.asarray(fig.subplots(n, ncols, squeeze=False))
    present = set()
    for i in range(n):
        cells = [("image", images[i])]
        for title, maps in columns:
            lab = maps[i]
            present.update(int(v) for v in np.unique(lab))
            cells.append((title, overlay(images[i], lab, alpha=alpha, palette=pal)
                          if style == "overlay" else pal[lab]))
        for j, (title, pixels) in enumerate(cells):
            ax = axes[i, j]
            ax.imshow(pixels, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=10)
        if titles is not None:
            axes[i, 0].set_ylabel(str(titles[i]), fontsize=8)

    if legend and present:
        from matplotlib.patches import Patch

        handles = []
        for c in sorted(present):
            if c == IGNORE_LABEL:
                name = "ignore"
            elif c < len(class_names):
                name = class_names[c]
            else:
                name = f"class {c}"
            handles.append(Patch(facecolor=pal[c] / 255.0, edgecolor="0.3", label=name))
        fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False,
                   ncols=min(len(handles), max(ncols * 2, 4)))
    return fig


def side_by_side(images, predictions=None, crf_predictions=None, ground_truths=None, *,
                 class_names=None, palette=None, style="labels", alpha=0.6,
                 titles=None, legend=True, column_width=3.0):
    """A figure: image | prediction | with CRF | ground truth, one row per image.

    Columns appear only for the label maps given, so `side_by_side(images,
    ground_truths=labels)` shows a data batch. Label maps are drawn in VOC
    colours (`style="labels"`) or blended onto the image (`style="overlay"`);
    a legend lists the classes that occur (255 as "ignore").

    Args:
      images: RGB [H, W, 3] in 0-255, or a batch [B, H, W, 3] / list of them.
      predictions: integer [H, W] (or [B, H, W] / list) argmax labels.
      crf_predictions: labels after the dense CRF, same layout.
      ground_truths: ground-truth labels (255 = ignore), same layout.
      class_names, palette, style, alpha, titles, legend, column_width: see
        `label_grid`.

    Returns:
      A `matplotlib.figure.Figure` (save it with `save_figure`; in a notebook
      it displays as the cell's value).

    Example:
      >>> image, gt = np.zeros((1, 8, 8, 3), np.uint8), np.eye(8, dtype=np.uint8)[None]
      >>> pred = crf_pred = gt
      >>> fig = side_by_side(image, pred, crf_pred, gt, titles=["2007_000032"])
      >>> save_figure(fig, "example.png")
    """
    columns = {}
    for title, maps in (("prediction", predictions), ("with CRF", crf_predictions),
                        ("ground truth", ground_truths)):
        if maps is not None:
            columns[title] = maps
    if not columns:
        raise ValueError("Give at least one of predictions, crf_predictions, ground_truths.")
    return label_grid(images, columns, class_names=class_names, palette=palette, style=style,
                      alpha=alpha, titles=titles, legend=legend, column_width=column_width)


def read_training_log(csv_path):
    """Read a Keras `CSVLogger` file into columns of floats.

    Args:
      csv_path: path of the CSV (header row first: `epoch,loss,...`).

    Returns:
      dict column name -> float64 [N] (empty cells and "nan" become NaN).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file is empty, has no header, or has no data rows.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"Training log not found: {csv_path}")
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise ValueError(f"Training log {csv_path} has no data rows (need a header and "
                         f"at least one epoch). Received: {len(rows)} non-empty lines")
    header, data = rows[0], rows[1:]

    def number(cell):
        try:
            return float(cell)
        except ValueError:
            return math.nan

    columns = {}
    for k, name in enumerate(header):
        columns[name.strip()] = np.asarray(
            [number(r[k]) if k < len(r) else math.nan for r in data], np.float64)
    return columns


def _x_axis(columns):
    for key in ("iteration", "iterations", "step", "steps", "epoch"):
        if key in columns:
            values = columns[key]
            # Keras writes 0-based epochs; a curve over "epoch 1..N" reads better.
            return key, values + 1 if key == "epoch" else values
    n = len(next(iter(columns.values())))
    return "epoch", np.arange(1, n + 1, dtype=np.float64)


def plot_training_curves(csv_path, *, path=None, title=None):
    """Loss and mIoU curves from the training run's CSV log.

    Plots every column named `loss`/`*_loss` in the left panel and every column
    containing "iou" (case-insensitive, e.g. `mean_iou`, `val_mean_iou`) in
    the right panel, against `iteration`/`step` if logged, else epoch.

    Args:
      csv_path: the Keras CSVLogger file (e.g. `runs/<preset>/log.csv`).
      path: optional image path to save the figure to (atomically).
      title: optional figure title.

    Returns:
      A `matplotlib.figure.Figure`.

    Raises:
      FileNotFoundError / ValueError: missing file, or no loss column.
    """
    columns = read_training_log(csv_path)
    losses = [k for k in columns if k == "loss" or k.endswith("_loss")]
    ious = [k for k in columns if "iou" in k.lower()]
    if not losses:
        raise ValueError(f"Training log {csv_path} has no loss column. "
                         f"Received columns: {list(columns)}")
    xname, x = _x_axis(columns)
    panels = [("loss", losses)] + ([("mIoU", ious)] if ious else [])
    fig = _new_figure((4.5 * len(panels), 3.2))
    from matplotlib.ticker import MaxNLocator

    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (ylabel, keys) in zip(axes, panels):
        for key in keys:
            y = columns[key]
            # A single point is invisible as a line; draw markers when sparse.
            ax.plot(x, y, marker="o" if len(y) < 30 else None, markersize=3, label=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xname)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig
