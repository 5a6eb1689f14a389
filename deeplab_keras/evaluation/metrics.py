"""Segmentation metrics from a confusion matrix (the PASCAL VOC protocol).

The VOC mIoU accumulates one confusion matrix over the whole split (not a mean
of per-image scores): IoU_c = TP_c / (TP_c + FP_c + FN_c), pixels labelled 255
are ignored, and the mean runs over the classes that occur in the ground truth
or the predictions (a class absent from both has no IoU and is left out).

Example:
    >>> cm = confusion_matrix(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [0, 0]]), 2)
    >>> cm
    array([[1, 0],
           [1, 1]])
    >>> iou_per_class(cm)  # class 0: 1/(1+1), class 1: 1/(1+1)
    array([0.5, 0.5])
"""

import numpy as np

from deeplab_keras.palette import IGNORE_LABEL


def _check_num_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or not 1 <= num_classes <= IGNORE_LABEL:
        raise ValueError(f"num_classes must be an int in [1, {IGNORE_LABEL}]. "
                         f"Received: num_classes={num_classes!r}")


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """Pixel counts per (ground truth, prediction) pair.

    Args:
      labels: int [...] ground-truth class ids in [0, num_classes) or `ignore_label`.
      predictions: int [...] predicted ids in [0, num_classes), same shape.
      num_classes: C.
      ignore_label: pixels with this label are not counted.

    Returns:
      int64 [C, C]; entry (i, j) counts pixels of class i predicted as j.

    Raises:
      ValueError: shapes differ, or a label / prediction outside the valid values
        (the message lists them).
    """
    _check_num_classes(num_classes)
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions must have the same shape. Received: "
                         f"labels.shape={labels.shape}, predictions.shape={predictions.shape}")
    labels = labels.astype(np.int64).ravel()
    predictions = predictions.astype(np.int64).ravel()
    keep = labels != ignore_label
    labels, predictions = labels[keep], predictions[keep]
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"labels must be in [0, {num_classes}) or {ignore_label}. "
                         f"Received values: {sorted(set(labels[bad].tolist()))[:10]}")
    bad = (predictions < 0) | (predictions >= num_classes)
    if bad.any():
        raise ValueError(f"predictions must be in [0, {num_classes}). "
                         f"Received values: {sorted(set(predictions[bad].tolist()))[:10]}")
    return np.bincount(labels * num_classes + predictions,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(cm):
    """IoU of each class: float64 [C], NaN for a class in neither labels nor predictions."""
    cm = np.asarray(cm, np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square matrix. Received: shape={cm.shape}")
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(cm):
    """Mean IoU over the classes that occur (NaN-skipping mean of `iou_per_class`)."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm):
    """Fraction of non-ignored pixels predicted correctly."""
    cm = np.asarray(cm, np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def mean_class_accuracy(cm):
    """Mean over ground-truth classes of the per-class recall."""
    cm = np.asarray(cm, np.float64)
    per_class = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(per_class > 0, np.diag(cm) / np.where(per_class > 0, per_class, 1), np.nan)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


class ConfusionMatrix:
    """Streaming accumulator over a split.

    Example:
        >>> pairs = [(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [0, 0]]))]  # (labels, predictions)
        >>> acc = ConfusionMatrix(2)
        >>> for labels, predictions in pairs:
        ...     acc.update(labels, predictions)
        >>> float(acc.mean_iou())
        0.5
    """

    def __init__(self, num_classes, ignore_label=IGNORE_LABEL):
        _check_num_classes(num_classes)
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, labels, predictions):
        """Add one image (or batch) of labels and predicted ids."""
        self.matrix += confusion_matrix(labels, predictions, self.num_classes, self.ignore_label)
        return self

    def iou_per_class(self):
        return iou_per_class(self.matrix)

    def mean_iou(self):
        return mean_iou(self.matrix)

    def pixel_accuracy(self):
        return pixel_accuracy(self.matrix)
