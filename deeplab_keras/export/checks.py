"""Parity checks of exported models against the Keras model they came from.

Every exported format runs the same graph (pre-processing, model, bilinear
upsampling, optional CRF, argmax), so on the same RGB inputs it must give the
same logits (float32: max |diff| <= 1e-3) and the same labels (float32 >=
99.9 %, float16 >= 99.5 %, int8 >= 97 % of pixels, and int8 mIoU within one
point of float). `deeplab-export --check` and the tests use these helpers.

Example:
  >>> images, labels = eval_images(size=(129, 129), num_images=20)
  >>> ref = reference_outputs(model, images)
  >>> compare_outputs(ref, run_format("model.tflite", images))   # a 129x129 float32 export
  {'label_agreement': ..., 'logits_max_abs_diff': ...}
"""

from __future__ import annotations

import numpy as np

from deeplab_keras.palette import IGNORE_LABEL
from deeplab_keras.preprocessing import MEAN_RGB

# The acceptance thresholds of issue 6, one place for tests and the CLI.
THRESHOLDS = {
    "float32": {"logits_max_abs_diff": 1e-3, "label_agreement": 0.999},
    "float16": {"label_agreement": 0.995},
    "dynamic_int8": {"label_agreement": 0.97},
    "int8": {"label_agreement": 0.97, "miou_drop_points": 1.0},
}


def label_agreement(a, b):
    """Fraction of pixels where two label maps agree (same shape required)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean(a == b))


def max_abs_diff(a, b):
    """max |a - b| of two float arrays of the same shape."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"arrays differ in shape: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def compare_outputs(reference, candidate):
    """Compare two output dicts ("labels", optionally "logits").

    Returns:
      dict with "label_agreement" and, when both have logits,
      "logits_max_abs_diff".
    """
    result = {"label_agreement": label_agreement(reference["labels"], candidate["labels"])}
    if "logits" in reference and "logits" in candidate:
        result["logits_max_abs_diff"] = max_abs_diff(reference["logits"], candidate["logits"])
    return result


def reference_outputs(model, images, crf=None, batch_size=16):
    """The Keras/TF reference: the export graph run eagerly in TensorFlow.

    Args:
      model: DeepLab Keras model.
      images: float32 [N, H, W, 3] RGB 0-255.
      crf: None, True or a DenseCRF.
      batch_size: images per call.

    Returns:
      dict of "labels" int32 [N, H, W] and "logits" float32 [N, h, w, C].
    """
    from deeplab_keras.export.serving import predict_rgb, resolve_crf

    crf = resolve_crf(crf)
    images = np.asarray(images, np.float32)
    outputs = {}
    for start in range(0, len(images), batch_size):
        for key, value in predict_rgb(model, images[start:start + batch_size], crf).items():
            outputs.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(values) for key, values in outputs.items()}


def fit_to_size(image, label, size):
    """Centre-crop or pad an (image, label) pair to `size` without resampling.

    Images are padded with the ImageNet mean colour and labels with 255
    (ignored), as the evaluation pipeline pads; labels are never interpolated.

    Args:
      image: [H, W, 3] RGB 0-255.
      label: int [H, W].
      size: (height, width).

    Returns:
      (float32 [h, w, 3], int32 [h, w]).
    """
    th, tw = size
    h, w = label.shape
    out_img = np.empty((th, tw, 3), np.float32)
    out_img[:] = np.asarray(MEAN_RGB, np.float32)
    out_lab = np.full((th, tw), IGNORE_LABEL, np.int32)
    # Source window (crop) and destination offset (pad), centred.
    sy, sx = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    dy, dx = max(0, (th - h) // 2), max(0, (tw - w) // 2)
    ch, cw = min(h, th), min(w, tw)
    out_img[dy:dy + ch, dx:dx + cw] = image[sy:sy + ch, sx:sx + cw]
    out_lab[dy:dy + ch, dx:dx + cw] = label[sy:sy + ch, sx:sx + cw]
    return out_img, out_lab


def eval_images(size, num_images=None, data_dir=None, split="val", num_classes=21):
    """Evaluation images of one fixed size from the data pipeline.

    Whole evaluation images from `deeplab_keras.data.make_dataset` (the
    built-in data unless `data_dir`), centre-cropped / padded to `size` so a
    fixed-size TFLite model can run them.

    Returns:
      (images float32 [N, H, W, 3] RGB 0-255, labels int32 [N, H, W], 255 = ignore).
    """
    from deeplab_keras.data import make_dataset
    from deeplab_keras.export.serving import normalize_size
    from deeplab_keras.preprocessing import deprocess_images

    size = normalize_size(size)
    if data_dir is None:
        from deeplab_keras.data import builtin

        data_dir = builtin.ensure_builtin()
    ds = make_dataset(data_dir, split, training=False, batch_size=1, num_classes=num_classes)
    if num_images is not None:
        ds = ds.take(num_images)
    images, labels = [], []
    for image, label in ds:
        rgb = np.clip(deprocess_images(image.numpy()[0]), 0, 255)
        img, lab = fit_to_size(rgb, label.numpy()[0], size)
        images.append(img)
        labels.append(lab)
    return np.stack(images), np.stack(labels)


def miou(labels, predictions, num_classes):
    """Mean IoU (in %) of predictions against labels (255 ignored)."""
    from deeplab_keras.evaluation.metrics import confusion_matrix, mean_iou

    return 100.0 * mean_iou(confusion_matrix(labels, predictions, num_classes))


def run_format(path, images):
    """Run an exported .tflite / .onnx file or SavedModel directory on images.

    Args:
      path: a .tflite file, a .onnx file, or a SavedModel version directory.
      images: float32 [N, H, W, 3] RGB 0-255.

    Returns:
      dict of stacked outputs ("labels", and "logits" where the format has them).
    """
    from pathlib import Path

    path = Path(path)
    if path.suffix == ".tflite":
        from deeplab_keras.export.tflite import run_tflite

        return run_tflite(path, images)
    if path.suffix == ".onnx":
        from deeplab_keras.export.onnx import run_onnx

        return run_onnx(path, images)
    if (path / "saved_model.pb").exists():
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        outputs = {}
        for image in np.asarray(images, np.float32):
            x = tf.constant(image[None])
            labels = loaded.signatures["serving_images"](images=x)["labels"]
            logits = loaded.signatures["serving_logits"](images=x)["logits"]
            outputs.setdefault("labels", []).append(labels.numpy()[0])
            outputs.setdefault("logits", []).append(logits.numpy()[0])
        return {key: np.stack(values) for key, values in outputs.items()}
    raise ValueError(f"Not an exported model (.tflite, .onnx or SavedModel dir): {path}")
