"""In-graph pre- and post-processing shared by every export format.

Everything a client would otherwise have to re-implement runs inside the exported
graph, so a SavedModel, a TFLite file and an ONNX file all take plain RGB images
(or encoded image bytes) and return label maps:

  encoded bytes --decode--> RGB uint8 [H, W, 3]
               --preprocess--> Caffe BGR minus the ImageNet mean
               --model--> logits [1, h8, w8, C]    (output stride 8)
               --bilinear resize--> logits [1, H, W, C]          (DeepLab inference)
               --optional dense CRF (mean field)--> probabilities [1, H, W, C]
               --argmax--> labels int32 [H, W]

(h8, w8) = `deeplab_keras.models.logits_size(backbone, (H, W))`: Caffe's
ceil-mode pooling arithmetic, ceil(H/8) only for H = 8k + 1 (375x500 gives
48x64 for VGG16, 48x63 for ResNet-101).

DeepLab v1 (Chen et al., ICLR 2015, §3.1) and v2 (TPAMI 2017, §3.1) upsample the
stride-8 score map bilinearly to the image size and then run the fully connected
CRF (§4 of v1 / §3.3 of v2) on the upsampled map.

Example:
  >>> module = ServingModule(model, crf=None)
  >>> out = module.serve_bytes(tf.constant([png_bytes]))
  >>> out["labels"].shape   # [1, H, W] int32, H x W of the PNG
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from deeplab_keras.models import resize_logits
from deeplab_keras.palette import IGNORE_LABEL
from deeplab_keras.preprocessing import MEAN_RGB

# Largest image (in pixels) the bytes signature accepts by default: 2048 x 2048.
# The full-width VGG16 conv1 activations alone are 64 x H x W float32, 1 GiB at
# this size; larger inputs are refused with a clear error instead of letting the
# serving process run out of memory. Change it with `max_image_pixels=`.
DEFAULT_MAX_IMAGE_PIXELS = 2048 * 2048

# Value written into `labels` outside an image's own H x W when a batch holds
# images of different sizes (the batch is padded to the largest one).
LABEL_PAD_VALUE = IGNORE_LABEL

# Name scope of the CRF's ops in the traced graphs.
CRF_SCOPE = "deeplab_crf"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def resolve_crf(crf):
    """`crf` argument of the exporters -> a DenseCRF layer or None.

    Args:
      crf: None / False (no CRF), True (a `DenseCRF()` with the DeepLab v2
        defaults) or a `deeplab_keras.crf.DenseCRF` instance.

    Returns:
      The CRF layer, or None.
    """
    if crf is None or crf is False:
        return None
    if crf is True:
        from deeplab_keras.crf import DenseCRF

        return DenseCRF()
    if callable(crf):
        return crf
    raise ValueError(
        "crf must be None, True or a deeplab_keras.crf.DenseCRF instance. "
        f"Received: crf={crf!r}"
    )


def crf_config(crf_layer):
    """JSON-able settings of a CRF layer (None without CRF), for export configs."""
    if crf_layer is None:
        return None
    get_config = getattr(crf_layer, "get_config", None)
    config = dict(get_config()) if get_config else {"class": type(crf_layer).__name__}
    return {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool, type(None)))}


def export_info(model, crf_layer, **extra):
    """The resolved settings written next to every export (STYLE: configs)."""
    import keras

    info = {
        "model_name": getattr(model, "name", None) or "deeplab",
        "num_classes": model_num_classes(model),
        "crf": crf_config(crf_layer),
        "preprocessing": "RGB 0-255 -> Caffe BGR minus ImageNet mean (in graph)",
        "upsampling": "bilinear (in graph)",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    info.update(extra)
    return info


def portable_tracing(crf, target="any"):
    """Context for tracing graphs for TFLite / ONNX.

    The CRF's default graph holds the portable (gather/scatter) form and,
    beside it, the sparse form that TensorFlow swaps in on CPU (the
    SavedModel keeps both). The converters take the portable form either
    way; inside `deeplab_keras.crf.portable_ops()` the sparse copy is left
    out, so the converted file is traced from a smaller graph, and
    target="tflite" traces the splat LiteRT runs fastest (see
    `deeplab_keras.crf.portable_ops`).
    """
    import contextlib

    if crf is None:
        return contextlib.nullcontext()
    from deeplab_keras.crf import portable_ops

    return portable_ops(target)


def model_num_classes(model):
    """Number of classes C of a DeepLab model (the last axis of its logits)."""
    shape = model.output_shape
    if isinstance(shape, dict):
        shape = shape.get("fused", next(iter(shape.values())))
    elif isinstance(shape, list):
        shape = shape[0]
    num_classes = shape[-1]
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            "Could not read the number of classes from the model's output shape. "
            f"Received: output_shape={model.output_shape}"
        )
    return num_classes


def model_logits(model, images):
    """Logits of a DeepLab model in inference mode.

    Args:
      model: a `build_model` model (or its MSC wrapper; with dict outputs the
        "fused" map is used).
      images: float32 [B, H, W, 3] preprocessed (Caffe BGR minus the mean).

    Returns:
      float32 [B, h8, w8, C].
    """
    out = model(images, training=False)
    if isinstance(out, dict):
        out = out["fused"] if "fused" in out else next(iter(out.values()))
    elif isinstance(out, (list, tuple)):
        out = out[0]
    return tf.cast(out, tf.float32)


def preprocess(images_rgb):
    """`preprocess_images` written with a gather instead of `tf.reverse`.

    Bit-identical in float32 (tests check it). The TFLite int8 quantizer gives
    REVERSE_V2 different input and output scales without requantizing (labels
    agreed on ~60 % of pixels with it); GATHER keeps one scale, and in ONNX it
    is one Gather instead of Shape/Expand/ReverseSequence.

    Args:
      images_rgb: float32 [..., 3] RGB 0-255.

    Returns:
      float32 [..., 3] BGR minus the ImageNet mean.
    """
    bgr = tf.gather(tf.cast(images_rgb, tf.float32), [2, 1, 0], axis=-1)
    return bgr - tf.constant(MEAN_RGB[::-1], tf.float32)


def _check_rgb(images):
    """Fail (instead of silently using 3 of 4 channels) unless [B, H, W, 3].

    A loaded SavedModel signature checks only the dtype of its input, not the
    static shape it was traced with, and the channel gather would quietly
    drop a 4th channel, so the check runs in the graph. With a fully static
    shape (TFLite / ONNX) it is decided at trace time and adds no op.
    """
    if images.shape.rank is not None and images.shape.rank != 4:
        raise ValueError(f"images must be RGB [B, H, W, 3]. Received: shape={images.shape}")
    if images.shape[-1] is not None and images.shape[-1] != 3:
        raise ValueError(f"images must be RGB [B, H, W, 3]. Received: shape={images.shape}")
    if images.shape.is_fully_defined():
        return images
    check = tf.debugging.assert_equal(
        tf.shape(images)[-1], 3, message="images must be RGB [B, H, W, 3] (3 channels)")
    with tf.control_dependencies([check]):
        return tf.identity(images)


def predict_rgb(model, images_rgb, crf=None, include_probabilities=False):
    """The full inference graph on RGB images of one size.

    Args:
      model: a DeepLab Keras model (input preprocessed, logits at 1/8).
      images_rgb: float32 or uint8 [B, H, W, 3] RGB in 0-255.
      crf: None or a DenseCRF layer (`resolve_crf`).
      include_probabilities: also return "probabilities".

    Returns:
      dict with "labels" int32 [B, H, W], "logits" float32 [B, h, w, C] (the
      raw model output at output stride 8) and, if asked, "probabilities"
      float32 [B, H, W, C] (softmax of the upsampled logits, or the CRF output).
    """
    images_rgb = _check_rgb(tf.cast(images_rgb, tf.float32))
    logits = model_logits(model, preprocess(images_rgb))
    size_hw = tf.shape(images_rgb)[1:3]
    static_hw = images_rgb.shape[1:3]
    if static_hw.is_fully_defined():
        size_hw = static_hw.as_list()  # static shapes keep the TFLite graph static.
    full = resize_logits(logits, size_hw)
    outputs = {"logits": logits}
    if crf is not None:
        with tf.name_scope(CRF_SCOPE):  # lets the int8 export keep the CRF in float
            probabilities = tf.cast(crf(images_rgb, full), tf.float32)
        outputs["labels"] = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        if include_probabilities:
            outputs["probabilities"] = probabilities
    else:
        outputs["labels"] = tf.argmax(full, axis=-1, output_type=tf.int32)
        if include_probabilities:
            outputs["probabilities"] = tf.nn.softmax(full, axis=-1)
    return outputs


def _header_size(data):
    """(height, width) int64 from a PNG or JPEG header, (0, 0) for other formats.

    Reading the size before decoding lets the graph refuse a decompression bomb
    (a small file that decodes to gigabytes) before allocating it.
    """
    length = tf.strings.length(data)
    head = tf.strings.substr(data, 0, tf.minimum(length, 8))
    is_png = tf.logical_and(tf.equal(head, _PNG_MAGIC), length >= 24)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, tf.minimum(length, 3)), _JPEG_MAGIC)

    def png_size():
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8), tf.int64)
        width = raw[0] * 2**24 + raw[1] * 2**16 + raw[2] * 2**8 + raw[3]
        height = raw[4] * 2**24 + raw[5] * 2**16 + raw[6] * 2**8 + raw[7]
        return tf.stack([height, width])

    def jpeg_size():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def unknown():
        return tf.zeros([2], tf.int64)

    return tf.case([(is_png, png_size), (is_jpeg, jpeg_size)], default=unknown)


def decode_image(data, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Encoded image bytes -> RGB uint8 [H, W, 3], with clear errors.

    JPEG, PNG, GIF (first frame) and BMP are accepted. Grayscale images are
    repeated to 3 channels and an alpha channel is dropped (`channels=3`).

    Args:
      data: tf.string scalar.
      max_image_pixels: refuse images with more than this many pixels.

    Returns:
      uint8 [H, W, 3].

    Raises (when the graph runs):
      tf.errors.InvalidArgumentError: the bytes are not a JPEG/PNG/GIF/BMP
        image ("Unknown image file format"), or the image is larger than
        `max_image_pixels`.
    """
    header_hw = _header_size(data)
    message = f"image too large: more than max_image_pixels={max_image_pixels} pixels"
    checks = [
        tf.debugging.assert_less_equal(
            header_hw[0] * header_hw[1], tf.constant(max_image_pixels, tf.int64), message=message
        )
    ]
    with tf.control_dependencies(checks):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    hw = tf.cast(tf.shape(image)[:2], tf.int64)
    with tf.control_dependencies(
        [tf.debugging.assert_less_equal(hw[0] * hw[1], tf.constant(max_image_pixels, tf.int64),
                                        message=message)]
    ):
        image = tf.identity(image)
    image.set_shape([None, None, 3])
    return image


class ServingModule(tf.Module):
    """The tf.functions behind the SavedModel signatures.

    Signatures (see `export_saved_model`):
      serve_bytes(image_bytes: tf.string [B]) ->
          labels int32 [B, Hmax, Wmax] (each image at its own size, the batch
          padded with 255 to the largest), height int32 [B], width int32 [B],
          probabilities float32 [B, Hmax, Wmax, C] (optional, padded with 0).
      serve_images(images: float32 [B, H, W, 3] RGB 0-255) ->
          labels int32 [B, H, W], probabilities (optional).
      serve_logits(images: float32 [B, H, W, 3] RGB 0-255) ->
          logits float32 [B, h8, w8, C] (raw model output).

    Args:
      model: DeepLab Keras model.
      crf: None or a DenseCRF layer.
      include_probabilities: add "probabilities" to the label outputs.
      max_image_pixels: size limit of the bytes signature.
    """

    def __init__(self, model, crf=None, include_probabilities=False,
                 max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
        super().__init__(name="deeplab_serving")
        if not isinstance(max_image_pixels, int) or max_image_pixels < 1:
            raise ValueError(
                f"max_image_pixels must be a positive int. Received: max_image_pixels={max_image_pixels!r}"
            )
        self.model = model
        self.crf = crf
        self.include_probabilities = bool(include_probabilities)
        self.max_image_pixels = max_image_pixels
        self.num_classes = model_num_classes(model)
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")],
        )
        self.serve_logits = tf.function(
            self._serve_logits,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")],
        )

    def _one_image(self, data):
        image = decode_image(data, self.max_image_pixels)
        out = predict_rgb(self.model, image[None], self.crf, self.include_probabilities)
        result = [tf.RaggedTensor.from_tensor(out["labels"][0]), tf.shape(image)[:2]]
        if self.include_probabilities:
            result.append(tf.RaggedTensor.from_tensor(out["probabilities"][0]))
        return tuple(result)

    def _serve_bytes(self, image_bytes):
        signature = [
            tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
            tf.TensorSpec([2], tf.int32),
        ]
        if self.include_probabilities:
            signature.append(
                tf.RaggedTensorSpec([None, None, self.num_classes], tf.float32, ragged_rank=1)
            )
        # One image at a time: every image keeps its own size (no resize, no
        # padding seen by the network), exactly like evaluation.
        results = tf.map_fn(self._one_image, image_bytes, fn_output_signature=tuple(signature))
        outputs = {
            "labels": results[0].to_tensor(default_value=LABEL_PAD_VALUE),
            "height": results[1][:, 0],
            "width": results[1][:, 1],
        }
        if self.include_probabilities:
            outputs["probabilities"] = results[2].to_tensor(default_value=0.0)
        return outputs

    def _serve_images(self, images):
        out = predict_rgb(self.model, images, self.crf, self.include_probabilities)
        out.pop("logits")
        return out

    def _serve_logits(self, images):
        return {"logits": model_logits(self.model, preprocess(_check_rgb(images)))}


def fixed_size_function(model, size, crf=None, include_probabilities=False, batch_size=1):
    """A tf.function on float RGB images of one static size (TFLite / ONNX input).

    Static shapes let the TFLite converter fold Keras's
    SpaceToBatchND -> Conv2D -> BatchToSpaceND (how TensorFlow runs a dilated
    convolution on CPU) back into a single dilated CONV_2D.

    Args:
      model: DeepLab Keras model.
      size: (height, width) ints, or None for a dynamic H / W.
      crf: None or a DenseCRF layer.
      include_probabilities: also output "probabilities".
      batch_size: static batch size (None for dynamic).

    Returns:
      tf.function(images: float32 [batch, H, W, 3] RGB 0-255) -> dict of
      "labels" int32 [batch, H, W], "logits" float32 [batch, h, w, C] and
      optionally "probabilities" float32 [batch, H, W, C].
    """
    hw = [None, None] if size is None else list(size)
    spec = tf.TensorSpec([batch_size, *hw, 3], tf.float32, name="images")

    def fn(images):
        return predict_rgb(model, images, crf, include_probabilities)

    return tf.function(fn, input_signature=[spec], autograph=False)


def normalize_size(size):
    """513 or (513, 513) -> (513, 513); validates positive ints."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok or h < 1 or w < 1:
        raise ValueError(f"size must be a positive int or (height, width). Received: size={size!r}")
    return (h, w)
