"""`Predictor`: one interface over the model formats (the runners), and `predict_image`.

`load_predictor` picks the runner by the path: `.keras` (`predict.keras_model`),
a SavedModel folder (`predict.saved_model`), `.tflite` (`predict.tflite`).
"""

import dataclasses
from pathlib import Path

import numpy as np

from deeplab_keras.palette import IGNORE_LABEL
from deeplab_keras.predict.inputs import _resize_image


class ModelOutputError(ValueError):
    """The model's output is unusable (NaN/Inf scores); names the model."""


def _resize_scores(scores, size_hw):
    """Bilinear resize of float [h, w, C] scores to size_hw (`models.resize_logits`)."""
    if scores.shape[:2] == tuple(size_hw):
        return scores
    from deeplab_keras.models import resize_logits

    return np.asarray(resize_logits(scores[None].astype(np.float32), tuple(size_hw)))[0]


@dataclasses.dataclass
class Predictor:
    """A loaded model: RGB image in, class scores or labels at its resolution out.

    Attributes:
      kind: "keras", "savedmodel" or "tflite".
      path: the file or directory it was loaded from.
      num_classes: number of output classes C.
      input_size: (H, W) the model requires (each image is resized to it and
        the scores back), or None for any size.
      has_crf: the model already runs the dense CRF in its graph (a SavedModel
        exported with `crf=`); its labels include it.
    """

    kind: str
    path: Path
    num_classes: int
    input_size: tuple | None
    logits_fn: object = dataclasses.field(repr=False, default=None)
    labels_fn: object = dataclasses.field(repr=False, default=None)
    has_crf: bool = False

    def _fit(self, image):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError("`image` must be uint8 RGB [H, W, 3]. Received: "
                             f"shape={image.shape}, dtype={image.dtype}")
        return image if self.input_size is None else _resize_image(image, self.input_size)

    def scores(self, image):
        """Class scores (logits) for one image.

        Args:
          image: uint8 [H, W, 3] RGB.

        Returns:
          float32 [H, W, C] logits, bilinearly upsampled from the model's
          output stride to the image's resolution (DeepLab v2 §3.1).
        """
        if self.logits_fn is None:
            raise ValueError(f"Model {self.path} returns labels only (no logits "
                             "signature), so scores / the CRF are not available.")
        out = np.asarray(self.logits_fn(self._fit(image)), np.float32)
        if out.ndim != 3 or out.shape[-1] != self.num_classes:
            raise ValueError(f"Model {self.path} returned scores of shape {out.shape}; "
                             f"expected [h, w, {self.num_classes}]")
        if not np.isfinite(out).all():
            # argmax of NaN is 0 everywhere: a silently all-background result.
            raise ModelOutputError(
                f"Model {self.path} produced NaN/Inf scores "
                f"({int((~np.isfinite(out)).sum())} of {out.size} values); the checkpoint "
                "is probably from a diverged training run.")
        return _resize_scores(out, np.shape(image)[:2])

    def labels(self, image):
        """Label map for one image: uint8 [H, W] class ids (argmax of the scores).

        Models with the CRF in their graph (or with labels only) return their
        own labels; otherwise the argmax of `scores`, which also checks them.
        """
        if self.logits_fn is not None and not (self.has_crf and self.labels_fn):
            return np.argmax(self.scores(image), axis=-1).astype(np.uint8)
        h, w = np.shape(image)[:2]
        labels = np.asarray(self.labels_fn(self._fit(image))).astype(np.uint8)
        if labels.shape != (h, w):
            # Fixed-size models: labels are class ids, so nearest neighbour only.
            from PIL import Image

            labels = np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST))
        return labels


def _check_num_classes(found, expected, path):
    if not isinstance(found, (int, np.integer)) or found < 1:
        raise ValueError(f"Cannot tell the number of classes of model {path} "
                         f"(output channels: {found}).")
    if found > IGNORE_LABEL:
        raise ValueError(
            f"Model {path} has {found} classes; label PNGs hold at most {IGNORE_LABEL} "
            f"(index {IGNORE_LABEL} means 'ignore').")
    if expected is not None and int(expected) != int(found):
        raise ValueError(
            f"Model {path} outputs {found} classes but num_classes={expected} was "
            "requested; pass the checkpoint trained for that class set.")


def _make_crf(crf):
    if crf is None or crf is False:
        return None
    if crf is True or isinstance(crf, dict):
        from deeplab_keras.crf import DenseCRF

        return DenseCRF(**(crf if isinstance(crf, dict) else {}))
    if callable(crf):
        return crf
    raise ValueError("`crf` must be a bool, a dict of DenseCRF arguments or a DenseCRF "
                     f"layer. Received: crf={crf!r}")


def predict_image(predictor, image, *, crf=None):
    """Label map for one RGB image.

    Args:
      predictor: from `load_predictor`.
      image: uint8 [H, W, 3] RGB.
      crf: None, or a callable `crf(images, logits) -> probabilities` such as
        `deeplab_keras.crf.DenseCRF()`, applied to the upsampled logits.

    Returns:
      uint8 [H, W] class ids: argmax of the scores, after the CRF when given.
    """
    if crf is None:
        return predictor.labels(image)
    if predictor.has_crf:
        raise ValueError(f"Model {predictor.path} already runs the dense CRF in its graph; "
                         "do not apply it a second time (drop crf / --crf).")
    logits = predictor.scores(image)
    probabilities = crf(image[None].astype(np.float32), logits[None])
    return np.argmax(np.asarray(probabilities)[0], axis=-1).astype(np.uint8)
