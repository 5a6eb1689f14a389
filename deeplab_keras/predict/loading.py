"""Opening a model file as a `Predictor`: the one place that knows every format.

It sits above `predictor` and the per-format runners (`keras_model`, `saved_model`,
`tflite`), which import `predictor` for the shared class, so that no module of the
package imports its own caller.
"""

from pathlib import Path

import numpy as np

from deeplab_keras.predict.keras_model import _load_keras
from deeplab_keras.predict.saved_model import _load_saved_model
from deeplab_keras.predict.tflite import _load_tflite


def load_predictor(model_path, *, num_classes=None):
    """Load a `.keras` checkpoint, a SavedModel directory or a `.tflite` file.

    Args:
      model_path: the model file or directory (kind chosen by suffix / layout;
        a TF Serving folder `savedmodels/<name>/` uses its highest version).
      num_classes: when given, the model must output this many classes.

    Returns:
      A `Predictor`: `predictor.labels(rgb_uint8)` -> uint8 [H, W],
      `predictor.scores(rgb_uint8)` -> float32 [H, W, C].

    Raises:
      FileNotFoundError: `model_path` does not exist.
      ValueError: not a loadable model of a known kind, or its number of
        classes differs from `num_classes`.

    Example:
      >>> from deeplab_keras.predict import load_predictor, read_image
      >>> p = load_predictor("runs/builtin/model.keras", num_classes=6)
      >>> p.labels(read_image("cat.jpg")).dtype
      dtype('uint8')
    """
    path = Path(model_path)
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, (int, np.integer))
                                    or num_classes < 1):
        raise ValueError(f"`num_classes` must be a positive integer. Received: "
                         f"num_classes={num_classes!r}")
    if not path.exists():
        raise FileNotFoundError(f"Model not found: {path}")
    if path.is_dir():
        return _load_saved_model(path, num_classes)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return _load_keras(path, num_classes)
    if suffix == ".tflite":
        return _load_tflite(path, num_classes)
    raise ValueError(f"Unknown model format {path}: expected a .keras file, a .tflite file "
                     "or a SavedModel directory.")
