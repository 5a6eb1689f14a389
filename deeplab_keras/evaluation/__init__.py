"""Evaluation: the VOC mIoU with 255 ignored, at full resolution, with MSC / flip / CRF.

  metrics     confusion matrix, per-class IoU, mIoU, pixel accuracy.
  evaluate    `evaluate_split` / `evaluate_examples` / `Predictor`, `format_table`.
  crf_search  `search_crf`: coarse-to-fine search of the CRF's w1, sigma_alpha, sigma_beta.

The command line `deeplab-evaluate` is `deeplab_keras.app.evaluate_cli` (it needs
training's presets and checkpoints, and evaluation does not import training);
`python -m deeplab_keras.evaluation` runs it.

Example:
    >>> from deeplab_keras.evaluation import evaluate_split, format_table
    >>> result = evaluate_split(model, voc_dir, "val", num_classes=21, scales=(1.0, 0.75, 0.5))
    >>> print(format_table(result)); result.miou
"""

from deeplab_keras.evaluation.metrics import (ConfusionMatrix, confusion_matrix, iou_per_class,
                                              mean_class_accuracy, mean_iou, pixel_accuracy)

_LAZY = {
    "EvalResult": "deeplab_keras.evaluation.evaluate",
    "Predictor": "deeplab_keras.evaluation.evaluate",
    "evaluate_examples": "deeplab_keras.evaluation.evaluate",
    "evaluate_split": "deeplab_keras.evaluation.evaluate",
    "format_table": "deeplab_keras.evaluation.evaluate",
    "search_crf": "deeplab_keras.evaluation.crf_search",
    "CrfSearchResult": "deeplab_keras.evaluation.crf_search",
}

__all__ = ["ConfusionMatrix", "confusion_matrix", "iou_per_class", "mean_class_accuracy",
           "mean_iou", "pixel_accuracy", *_LAZY]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deeplab_keras.evaluation' has no attribute {name!r}")
