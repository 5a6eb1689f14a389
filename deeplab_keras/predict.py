"""Segment image files with a trained DeepLab model: the `deeplab-predict` command.

Reads images (files or folders), runs a model saved as

- a Keras checkpoint (`.keras`, written by training or `model.save`),
- a SavedModel directory (what `deeplab_keras.export.export_saved_model` writes; a
  TF Serving model folder `savedmodels/<name>/` picks its highest version), or
- a TensorFlow Lite flatbuffer (`.tflite`, fixed input size: each image is resized
  to it and the logits are resized back),

optionally refines the scores with the dense CRF (`--crf`, `deeplab_keras.crf`),
and writes, for every image `<stem>.<ext>`:

- `OUTPUT/labels/<stem>.png`: the label map as a VOC palette PNG (pixel value =
  class id = argmax of the scores, at the image's original size; the format of
  VOC's SegmentationClass files);
- `OUTPUT/overlays/<stem>.jpg`: the class colours blended onto the image.

A model trained on your own data has a class sidecar `classes.json` (names and
colours of the dataset's class table, `deeplab_keras.data.custom`) beside it
(`runs/<name>/classes.json` next to `model.keras`, or in the SavedModel
directory); the label PNGs and overlays then use the dataset's colours (every
class coloured in the overlays) and `OUTPUT/legend.png` shows them with the class
names. Without one: the VOC colour map, background left uncoloured.

Image handling (documented behaviour, tested in tests/reliability/test_predict.py):

- grayscale, palette, RGBA / LA (alpha ignored, as `tf.io.decode_png(channels=3)`
  does), CMYK JPEG and 16-bit PNG (scaled to 8 bit) are converted to RGB;
- EXIF orientation is applied, so outputs match the image as viewers show it
  (`exif_transpose=False` / `--ignore-exif` uses the stored pixel order instead,
  as the training and evaluation readers do, for images whose labels were drawn
  on the stored pixels);
- images larger than `max_side` pixels on their long side are downscaled (aspect
  kept) for inference; the label PNG is scaled back to the original size by
  nearest neighbour (labels are never interpolated); overlays stay at the
  inference size. Images above `max_pixels` in total are refused (memory);
- an unreadable file (truncated, not an image, unsupported mode, too large) is
  reported by name and skipped; the others are still processed, a summary is
  printed, and the command exits with status 1.

Example (library):
  >>> from deeplab_keras.predict import predict_paths
  >>> summary = predict_paths(["photos/"], "runs/builtin/model.keras", "out/")
  >>> summary.failed        # [(Path, reason), ...]

Example (command line):
  $ deeplab-predict photos/ img.jpg --model runs/builtin/model.keras -o out/ --crf
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from deeplab_keras.palette import IGNORE_LABEL

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MAX_PIXELS",
    "ImageReadError",
    "ModelOutputError",
    "read_image",
    "Predictor",
    "load_predictor",
    "predict_image",
    "predict_paths",
    "PredictSummary",
    "main",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pnm")
# Inference resolution cap (long side). DeepLab is trained on ~500 px VOC images, so
# objects in much larger photos are at scales it never saw; 1024 also bounds the
# full-width VGG16 conv1 activations to 256 MB and CPU time to seconds per image.
DEFAULT_MAX_SIDE = 1024
# Decoding refuses images above this many pixels (an RGB 10000x10000 is 300 MB, a
# 120 MP image 360 MB); anything bigger is almost certainly a mistake or a bomb.
DEFAULT_MAX_PIXELS = 120_000_000


class ImageReadError(ValueError):
    """An input file that is not a readable, supported image.

    Attributes:
      path: the file.
      reason: what is wrong with it; `str(error)` is "<path>: <reason>".
    """

    def __init__(self, path, reason):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


class ModelOutputError(ValueError):
    """The model's output is unusable (NaN/Inf scores); names the model."""


# --------------------------------------------------------------------------- #
# Reading images
# --------------------------------------------------------------------------- #

def _to_rgb(img, path):
    """Any PIL mode -> uint8 [H, W, 3] RGB."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale: PIL's convert("RGB") clips at 255 instead of scaling.
        values = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        raise ImageReadError(path, "floating-point images (PIL mode 'F') are not "
                             "supported; save it as an 8- or 16-bit PNG")
    # RGB, L, 1, P, RGBA, LA, PA, CMYK (incl. Adobe-inverted JPEG), YCbCr, LAB, HSV.
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _open_image(path, max_pixels, max_side=None, exif_transpose=True):
    """Decode `path`; returns (uint8 [h, w, 3] RGB, original (H, W)).

    When `max_side` is given the returned image is at most that long on its long
    side (JPEGs are decoded directly at a reduced scale, which saves memory);
    the original size is reported after EXIF rotation.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # We enforce our own, documented pixel limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageReadError(path, f"image is {w}x{h} = {w * h} pixels, above "
                                         f"the limit max_pixels={max_pixels}; downscale it first")
                if w < 1 or h < 1:
                    raise ImageReadError(path, f"image has no pixels ({w}x{h})")
                orientation = img.getexif().get(0x0112, 1) if exif_transpose else 1
                swap = orientation in (5, 6, 7, 8)
                orig_hw = (w, h) if swap else (h, w)
                if max_side and img.format == "JPEG" and max(w, h) > max_side:
                    scale = max_side / max(w, h)
                    img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
                img.load()
                if exif_transpose:
                    img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img, path)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"image too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        # Truncated / corrupt data surface as OSError ("image file is truncated"),
        # SyntaxError (broken PNG chunks) or ValueError from the decoders.
        raise ImageReadError(path, f"cannot decode image ({e})") from None
    if max_side and max(rgb.shape[:2]) > max_side:
        rgb = _resize_image(rgb, _fit_within(rgb.shape[:2], max_side))
    return rgb, orig_hw


def read_image(path, *, max_pixels=DEFAULT_MAX_PIXELS, exif_transpose=True):
    """Read an image file as RGB uint8 at full resolution.

    Args:
      path: image file (any format PIL reads).
      max_pixels: refuse images with more pixels than this.
      exif_transpose: apply the EXIF orientation tag (as image viewers do).

    Returns:
      uint8 [H, W, 3] RGB.

    Raises:
      FileNotFoundError: `path` does not exist.
      ImageReadError: not a readable image, unsupported mode, or too large;
        the message starts with the file name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    return _open_image(path, max_pixels, exif_transpose=exif_transpose)[0]


def _fit_within(hw, max_side):
    h, w = hw
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize_image(image, size_hw):
    """Bilinear resize of an RGB uint8 image (antialiased when shrinking)."""
    from PIL import Image

    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _resize_scores(scores, size_hw):
    """Bilinear resize of float [h, w, C] scores to size_hw (`models.resize_logits`)."""
    if scores.shape[:2] == tuple(size_hw):
        return scores
    from deeplab_keras.models import resize_logits

    return np.asarray(resize_logits(scores[None].astype(np.float32), tuple(size_hw)))[0]


# --------------------------------------------------------------------------- #
# Loading models
# --------------------------------------------------------------------------- #

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


def _load_keras(path, num_classes):
    import keras

    import deeplab_keras.models  # noqa: F401  (registers the custom layers)
    from deeplab_keras.preprocessing import preprocess_images

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # a zip that is not a Keras file, unknown layers, ...
        raise ValueError(f"Could not load Keras model {path}: {type(e).__name__}: {e}") from None
    output_shape = model.output_shape
    fused = isinstance(output_shape, dict)
    if fused:
        # MSC models built with training outputs: the fused map is the prediction.
        if "fused" not in output_shape:
            raise ValueError(f"Model {path} returns a dict without a 'fused' output: "
                             f"{sorted(output_shape)}")
        output_shape = output_shape["fused"]
    if isinstance(output_shape, list) or len(output_shape) != 4:
        raise ValueError(f"Model {path} must output one logits tensor [B, h, w, C]. "
                         f"Received: output_shape={model.output_shape}")
    input_shape = model.input_shape
    if isinstance(input_shape, list) or len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(f"Model {path} must take one image input [B, H, W, 3]. "
                         f"Received: input_shape={input_shape}")
    c = output_shape[-1]
    _check_num_classes(c, num_classes, path)
    fixed = tuple(input_shape[1:3]) if None not in input_shape[1:3] else None

    def logits_fn(image):
        y = model(preprocess_images(image[None]), training=False)
        return np.asarray(y["fused"] if fused else y)[0]

    return Predictor("keras", Path(path), int(c), fixed, logits_fn=logits_fn)


def _resolve_saved_model_dir(path):
    """Accept a SavedModel dir or a TF Serving model dir holding numeric versions."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()
                and (p / "saved_model.pb").is_file()]
    if versions:
        return max(versions, key=lambda p: int(p.name))
    raise ValueError(f"{path} is a directory but not a SavedModel (no saved_model.pb, "
                     "and no numeric version folders containing one)")


def _signature_input(fn):
    _, kwargs = fn.structured_input_signature
    if len(kwargs) != 1:
        return None, None
    return next(iter(kwargs.items()))


def _is_image_batch(spec):
    return spec is not None and spec.dtype.is_floating and spec.shape.rank == 4 \
        and spec.shape[-1] == 3


def _load_saved_model(path, num_classes):
    import json

    import tensorflow as tf

    from deeplab_keras.preprocessing import preprocess_images

    path = _resolve_saved_model_dir(path)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ValueError(f"Could not load SavedModel {path}: {type(e).__name__}: {e}") from None
    sigs = dict(loaded.signatures)
    config_file = path / "deeplab_export.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}

    def call(name, key):
        fn = sigs[name]
        arg, _ = _signature_input(fn)
        return lambda image: np.asarray(
            fn(**{arg: tf.constant(image[None], tf.float32)})[key])[0]

    if "serving_logits" in sigs and "serving_images" in sigs:
        # Written by deeplab_keras.export: float signatures on RGB 0-255 images
        # (pre-processing in the graph), no re-encoding of the image needed.
        c = sigs["serving_logits"].structured_outputs["logits"].shape[-1]
        c = config.get("num_classes", c)
        _check_num_classes(c, num_classes, path)
        return Predictor("savedmodel", path, int(c), None,
                         logits_fn=call("serving_logits", "logits"),
                         labels_fn=call("serving_images", "labels"),
                         has_crf=bool(config.get("crf")))

    # Any other SavedModel: a float image signature (e.g. Keras `model.export()`,
    # which takes the model's pre-processed input) ...
    for name in sorted(sigs, key=lambda n: n != "serving_default"):
        arg, spec = _signature_input(sigs[name])
        outputs = sigs[name].structured_outputs
        four_d = [k for k, v in outputs.items() if v.shape.rank == 4]
        if _is_image_batch(spec) and len(four_d) == 1:
            fn, key = sigs[name], four_d[0]
            c = outputs[key].shape[-1]
            _check_num_classes(c, num_classes, path)

            def logits_fn(image, fn=fn, arg=arg, key=key):
                x = tf.constant(preprocess_images(image[None]), spec.dtype)
                return np.asarray(fn(**{arg: x})[key])[0]

            fixed = tuple(spec.shape[1:3]) if spec.shape[1:3].is_fully_defined() else None
            return Predictor("savedmodel", path, int(c), fixed, logits_fn=logits_fn)
    # ... or a signature on encoded image bytes returning labels.
    for name in sorted(sigs, key=lambda n: n != "serving_default"):
        arg, spec = _signature_input(sigs[name])
        outputs = sigs[name].structured_outputs
        if spec is not None and spec.dtype == tf.string and "labels" in outputs:
            if "num_classes" not in config:
                raise ValueError(f"SavedModel {path}: signature '{name}' returns labels "
                                 "but the number of classes is unknown "
                                 "(no deeplab_export.json).")
            _check_num_classes(config["num_classes"], num_classes, path)
            fn = sigs[name]

            def labels_fn(image, fn=fn, arg=arg):
                return np.asarray(fn(**{arg: tf.constant([_encode_png(image)])})["labels"])[0]

            return Predictor("savedmodel", path, int(config["num_classes"]), None,
                             labels_fn=labels_fn, has_crf=bool(config.get("crf")))
    raise ValueError(
        f"SavedModel {path} has no signature on an image batch [B, H, W, 3] returning "
        f"scores, nor one on encoded image bytes returning labels. "
        f"Signatures: {sorted(sigs)}")


def _encode_png(image):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _load_tflite(path, num_classes):
    from deeplab_keras.preprocessing import preprocess_images

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError("Running .tflite models needs `ai-edge-litert` "
                          "(pip install ai-edge-litert).") from None
    try:
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
    except Exception as e:
        raise ValueError(f"Could not load TFLite model {path}: {type(e).__name__}: {e}") from None
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][-1] != 3:
        raise ValueError(f"TFLite model {path} must take one [1, H, W, 3] input. "
                         f"Received: {[tuple(d['shape']) for d in inputs]}")
    inp = inputs[0]
    h, w = int(inp["shape"][1]), int(inp["shape"][2])
    # Output names come from the signature; deeplab_keras.export writes
    # "logits" (stride 8) and "labels", and takes RGB 0-255 (pre-processing in
    # the graph). Anything else is taken to be a plain converted Keras model:
    # pre-processed input, one 4-D logits output.
    by_name = {}
    for runner_outputs in interp.get_signature_list().values():
        for name in runner_outputs.get("outputs", ()):
            by_name[name] = None
    sig = next(iter(interp.get_signature_list()), None)
    deeplab_export = sig is not None and {"logits", "labels"} <= set(by_name)
    if deeplab_export:
        runner = interp.get_signature_runner(sig)
        arg = interp.get_signature_list()[sig]["inputs"][0]
        logits_detail = runner.get_output_details()["logits"]
    else:
        four_d = [d for d in outputs if len(d["shape"]) == 4]
        if len(four_d) != 1:
            raise ValueError(f"TFLite model {path}: expected one [1, h, w, C] logits output. "
                             f"Received: {[tuple(d['shape']) for d in outputs]}")
        logits_detail = four_d[0]
    c = int(logits_detail["shape"][-1])
    _check_num_classes(c, num_classes, path)

    def quantize(x, detail):
        scale, zero = detail.get("quantization", (0.0, 0))
        if np.issubdtype(detail["dtype"], np.integer) and scale:
            x = np.rint(x / scale + zero)
        return x.astype(detail["dtype"])

    def dequantize(y, detail):
        scale, zero = detail.get("quantization", (0.0, 0))
        if np.issubdtype(y.dtype, np.integer) and scale:
            return (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def logits_fn(image):
        if deeplab_export:
            out = runner(**{arg: quantize(image[None].astype(np.float32), inp)})
            return dequantize(out["logits"], logits_detail)[0]
        interp.set_tensor(inp["index"], quantize(preprocess_images(image[None]), inp))
        interp.invoke()
        return dequantize(interp.get_tensor(logits_detail["index"]), logits_detail)[0]

    return Predictor("tflite", Path(path), c, (h, w), logits_fn=logits_fn)


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
      >>> p = load_predictor("runs/builtin/model.keras", num_classes=21)
      >>> labels = p.labels(read_image("cat.jpg"))
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


# --------------------------------------------------------------------------- #
# Predicting
# --------------------------------------------------------------------------- #

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


@dataclasses.dataclass
class PredictSummary:
    """What `predict_paths` did.

    Attributes:
      written: list of (input image, label PNG, overlay or None), in input order.
      failed: list of (input image, reason) for the files that were skipped.
    """

    written: list
    failed: list

    @property
    def ok(self):
        return not self.failed

    def __str__(self):
        lines = [f"{len(self.written)} image(s) segmented, {len(self.failed)} failed."]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def _list_inputs(inputs):
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise ValueError("No inputs given: pass image files or folders.")
    files, missing = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in "
                                 f"folder {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            missing.append(str(p))
    if missing:
        raise FileNotFoundError(f"Input not found: {', '.join(missing)}")
    return files


def _output_names(files):
    """Unique output stems: the file stem, with _2, _3 ... for repeats."""
    seen, names = {}, []
    for f in files:
        n = seen.get(f.stem, 0) + 1
        seen[f.stem] = n
        names.append(f.stem if n == 1 else f"{f.stem}_{n}")
    return names


def _prepare_output_dir(output_dir, overlays):
    output_dir = Path(output_dir)
    subdirs = [output_dir / "labels"] + ([output_dir / "overlays"] if overlays else [])
    for d in subdirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise NotADirectoryError(
                f"Output directory {d} cannot be created: a file is in the way") from None
        except PermissionError:
            raise PermissionError(f"Output directory {d} is not writable") from None
        # mkdir succeeds on an existing read-only folder: probe with a real file.
        try:
            fd, probe = tempfile.mkstemp(prefix=".deeplab-write-test.", dir=d)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise PermissionError(f"Output directory {d} is not writable ({e})") from None
    return output_dir


def _save_jpeg(rgb, path, quality=90):
    from PIL import Image

    from deeplab_keras.viz import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)
    return path


def find_class_sidecar(model_path, predictor=None):
    """The `classes.json` that belongs to a model, or None.

    Looked up beside a `.keras` / `.tflite` file, and in a SavedModel directory
    (the version directory, then the folder given).
    """
    from deeplab_keras.data.custom import CLASSES_FILE

    path = Path(model_path)
    places = [path / CLASSES_FILE] if path.is_dir() else [path.parent / CLASSES_FILE]
    if predictor is not None and Path(predictor.path).is_dir():
        places.insert(0, Path(predictor.path) / CLASSES_FILE)
    return next((p for p in places if p.is_file()), None)


def _sidecar_palette(classes_path, predictor):
    """uint8 [256, 3]: the sidecar's colours for ids 0..C-1, VOC's beyond (255 = ignore)."""
    from deeplab_keras.data.custom import read_classes_json
    from deeplab_keras.palette import VOC_PALETTE

    names, colors = read_classes_json(classes_path)
    if len(names) != predictor.num_classes:
        raise ValueError(f"{classes_path} lists {len(names)} classes but the model "
                         f"{predictor.path} outputs {predictor.num_classes}.")
    palette = VOC_PALETTE.copy()
    palette[:len(colors)] = colors
    return palette


def predict_paths(inputs, model_path, output_dir, *, crf=False, num_classes=None,
                  overlays=True, alpha=0.5, max_side=DEFAULT_MAX_SIDE,
                  max_pixels=DEFAULT_MAX_PIXELS, exif_transpose=True, verbose=True):
    """Segment image files and write label PNGs and overlays.

    Args:
      inputs: an image file / folder, or a list of them (folders: the image
        files directly inside, sorted by name).
      model_path: `.keras` checkpoint, SavedModel directory, or `.tflite` file.
      output_dir: where `labels/<stem>.png` and `overlays/<stem>.jpg` go
        (created if needed).
      crf: True to refine with `deeplab_keras.crf.DenseCRF()` (default
        parameters), a dict of DenseCRF arguments, or a CRF layer.
      num_classes: if given, the model must output this many classes.
      overlays: also write colour overlays.
      alpha: overlay opacity in [0, 1].
      max_side: images longer than this are downscaled for inference (labels
        are written back at the original size by nearest neighbour).
      max_pixels: images with more pixels are refused (reported, skipped).
      exif_transpose: apply EXIF orientation (False: stored pixel order, as
        the training / evaluation readers).
      verbose: print a progress bar and the summary.

    Returns:
      `PredictSummary` with the files written and those that failed.

    Raises:
      FileNotFoundError: an input or the model does not exist.
      ValueError: bad arguments, no images in a folder, unloadable model,
        num_classes mismatch.
      PermissionError / NotADirectoryError: the output directory is not writable.
      Unreadable images do not raise: they are listed in `summary.failed`.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
    for name, value in (("max_side", max_side), ("max_pixels", max_pixels)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
    files = _list_inputs(inputs)
    if not Path(model_path).exists():
        raise FileNotFoundError(f"Model not found: {model_path}")
    output_dir = _prepare_output_dir(output_dir, overlays)
    crf_layer = _make_crf(crf)
    predictor = load_predictor(model_path, num_classes=num_classes)
    if crf_layer is not None and predictor.has_crf:
        raise ValueError(f"Model {predictor.path} already runs the dense CRF in its graph; "
                         "drop crf / --crf.")
    if crf_layer is not None and predictor.logits_fn is None:
        raise ValueError(f"Model {predictor.path} returns labels only (no logits "
                         "signature), so the CRF cannot be applied; drop crf / --crf.")

    import tensorflow as tf
    from PIL import Image

    from deeplab_keras import viz

    palette, transparent = None, (0,)
    classes = find_class_sidecar(model_path, predictor)
    if classes is not None:
        palette, transparent = _sidecar_palette(classes, predictor), ()
    progbar = None
    if verbose:
        import keras

        print(f"Segmenting {len(files)} image(s) with {predictor.kind} model {predictor.path}"
              f"{' + dense CRF' if crf_layer is not None else ''} -> {output_dir}")
        progbar = keras.utils.Progbar(len(files), unit_name="image")
    written, failed = [], []
    for i, (src, stem) in enumerate(zip(files, _output_names(files))):
        try:
            image, orig_hw = _open_image(src, max_pixels, max_side, exif_transpose)
            labels = predict_image(predictor, image, crf=crf_layer)
            full = labels
            if labels.shape != orig_hw:
                full = np.asarray(Image.fromarray(labels).resize(
                    (orig_hw[1], orig_hw[0]), Image.NEAREST))
            label_path = viz.save_label_png(full, output_dir / "labels" / f"{stem}.png",
                                            palette=palette)
            overlay_path = None
            if overlays:
                overlay_path = _save_jpeg(
                    viz.overlay(image, labels, alpha=alpha, palette=palette,
                                transparent_labels=transparent),
                    output_dir / "overlays" / f"{stem}.jpg")
            written.append((src, label_path, overlay_path))
        except (ImageReadError, OSError, tf.errors.ResourceExhaustedError) as e:
            # One bad file must not cost the others; the summary names it.
            if isinstance(e, ImageReadError):
                reason = e.reason
            elif isinstance(e, tf.errors.ResourceExhaustedError):
                reason = (f"out of memory at {image.shape[0]}x{image.shape[1]} pixels; "
                          f"lower max_side (--max-side, now {max_side})")
            else:
                reason = str(e)
            failed.append((src, reason))
            if verbose:
                print(f"\nskipped {src}: {reason}", file=sys.stderr)
        if progbar is not None:
            progbar.update(i + 1)
    if classes is not None:
        from deeplab_keras.data.custom import read_classes_json

        legend = output_dir / "legend.png"
        with viz.atomic_path(legend) as tmp:
            Image.fromarray(viz.legend_image(read_classes_json(classes)[0], palette)).save(
                tmp, format="PNG")
    summary = PredictSummary(written, failed)
    if verbose:
        print(summary)
    return summary


def main(argv=None):
    """The `deeplab-predict` console script. Returns the exit status.

    0: every image segmented; 1: some images failed (named in the summary);
    2: bad arguments, missing model or inputs, unwritable output directory.
    """
    parser = argparse.ArgumentParser(
        prog="deeplab-predict",
        description="Segment images with a DeepLab model (.keras, SavedModel directory or "
                    ".tflite). Writes OUTPUT/labels/<name>.png (VOC palette PNG, pixel = "
                    "class id) and OUTPUT/overlays/<name>.jpg.")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("-m", "--model", required=True,
                        help=".keras checkpoint, SavedModel directory or .tflite file")
    parser.add_argument("-o", "--output-dir", required=True, help="output folder")
    parser.add_argument("--crf", action="store_true",
                        help="refine with the dense CRF (deeplab_keras.crf.DenseCRF defaults)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="fail unless the model outputs this many classes")
    parser.add_argument("--no-overlays", action="store_true", help="write label PNGs only")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (0.5)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                        help=f"downscale longer images for inference ({DEFAULT_MAX_SIDE})")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images with more pixels ({DEFAULT_MAX_PIXELS})")
    parser.add_argument("--ignore-exif", action="store_true",
                        help="do not apply EXIF orientation (use the stored pixel order, "
                             "like the training and evaluation readers)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        summary = predict_paths(
            args.inputs, args.model, args.output_dir, crf=args.crf,
            num_classes=args.num_classes, overlays=not args.no_overlays, alpha=args.alpha,
            max_side=args.max_side, max_pixels=args.max_pixels,
            exif_transpose=not args.ignore_exif, verbose=not args.quiet)
    except (ValueError, OSError, ImportError) as e:
        print(f"deeplab-predict: error: {e}", file=sys.stderr)
        return 2
    if args.quiet and summary.failed:
        print(summary, file=sys.stderr)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
