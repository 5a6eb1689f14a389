"""Class statistics of a split: pixel frequencies, class weights, the dominance check.

`frequency_report` counts class pixels over a split's masks at full resolution
(`Dataset.pixel_counts`, decoded once per process); `class_weights` turns the
counts into per-class loss weights; `dominance_warning` flags a split where one
class covers more than 95 % of the labelled pixels.
"""

import dataclasses

import numpy as np

from deeplab_keras.palette import IGNORE_LABEL

DOMINANT_CLASS_FRACTION = 0.95
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
