"""Full-resolution evaluation: mIoU with optional MSC, flip and dense-CRF inference.

For every image of a split (the VOC protocol; DeepLab v1 Sec. 4.1, v2 Sec. 4):
  1. the preprocessed image goes through the network at each inference scale
     (MSC: 1, 0.75, 0.5 by default, score maps max-fused at the scale-1 logit
     size, `deeplab_keras.models.wrap_msc`);
  2. the stride-8 logits are upsampled bilinearly to the image size;
  3. optionally the horizontally flipped image is predicted too and the two
     full-resolution logit maps are averaged;
  4. optionally the dense CRF (`deeplab_keras.crf.DenseCRF`) refines them, on the
     RGB image recovered with `deprocess_images`;
  5. the argmax enters one confusion matrix over the split (255 ignored).

Images are read one at a time with the data package's reference decoders, so a
file that cannot be read (or whose label does not fit) is reported and skipped
while the rest is evaluated; `EvalResult.failed` lists them.

Example:
    >>> import deeplab_keras, keras
    >>> from deeplab_keras.data import builtin
    >>> model = keras.models.load_model("runs/builtin/model.keras")
    >>> result = evaluate_split(model, builtin.ensure_builtin(), "val", num_classes=6)
    >>> print(format_table(result))
"""

import dataclasses
import json
import time

import numpy as np
import tensorflow as tf

from deeplab_keras.evaluation.metrics import (ConfusionMatrix, iou_per_class, mean_iou,
                                              pixel_accuracy, mean_class_accuracy)
from deeplab_keras.palette import IGNORE_LABEL
from deeplab_keras.preprocessing import deprocess_images, preprocess_images


@dataclasses.dataclass
class EvalResult:
    """Scores of one evaluation.

    Attributes:
      miou: mean IoU over the classes present (float).
      iou: per-class IoU, NaN for classes absent from labels and predictions.
      class_names: names of the classes (len C).
      confusion: int64 [C, C] (rows ground truth, columns prediction).
      pixel_accuracy, mean_class_accuracy: the other VOC scores.
      num_images: images evaluated.
      failed: [(example name, message)] of the images that could not be evaluated.
      settings: split, scales, flip, CRF parameters, seconds.
    """

    miou: float
    iou: list
    class_names: list
    confusion: np.ndarray
    pixel_accuracy: float
    mean_class_accuracy: float
    num_images: int
    failed: list
    settings: dict

    def to_dict(self):
        def clean(x):
            return None if isinstance(x, float) and not np.isfinite(x) else x

        return {
            "miou": clean(self.miou),
            "per_class_iou": {n: clean(float(v)) for n, v in zip(self.class_names, self.iou)},
            "pixel_accuracy": clean(self.pixel_accuracy),
            "mean_class_accuracy": clean(self.mean_class_accuracy),
            "num_images": self.num_images,
            "failed": [{"name": n, "error": m} for n, m in self.failed],
            "confusion_matrix": np.asarray(self.confusion).tolist(),
            "settings": self.settings,
        }

    def to_json(self, path):
        """Write `to_dict()` as JSON, atomically."""
        from deeplab_keras.utils.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def format_table(result):
    """The per-class IoU table as text (one row per class, then the mean)."""
    width = max([len("mean IoU")] + [len(n) for n in result.class_names])
    lines = [f"{'class':<{width}}  IoU", f"{'-' * width}  ------"]
    for name, value in zip(result.class_names, result.iou):
        lines.append(f"{name:<{width}}  {'   n/a' if np.isnan(value) else f'{value:6.4f}'}")
    lines.append(f"{'-' * width}  ------")
    lines.append(f"{'mean IoU':<{width}}  {result.miou:6.4f}")
    lines.append(f"({result.num_images} images, pixel accuracy {result.pixel_accuracy:.4f}"
                 + (f", {len(result.failed)} failed" if result.failed else "") + ")")
    for name, message in result.failed:
        lines.append(f"  FAILED {name}: {message}")
    return "\n".join(lines)


class Predictor:
    """Full-resolution logits of one image: MSC, flip and CRF as configured.

    Args:
      model: single-scale DeepLab model (preprocessed [B, H, W, 3] -> stride-8 logits).
      scales: inference scales; more than one wraps the model with `wrap_msc`
        (max fusion). Must contain 1.0.
      flip: average with the prediction of the flipped image.
      crf: None, True (DenseCRF defaults) or a `deeplab_keras.crf.DenseCRF`.
      pad_to: None, or the side (513 in DeepLab's test protocol) to which the
        image is padded at the bottom/right with the mean pixel (0 after
        preprocessing) before the network; the logits are upsampled to the
        padded size and cropped back to the image, as in the released Caffe
        test nets. Larger images are not padded on that side.

    Calling it on a preprocessed float32 [H, W, 3] image returns float32
    [H, W, C]: logits, or CRF probabilities when `crf` is set. `labels(image)`
    gives the int32 [H, W] argmax.
    """

    def __init__(self, model, scales=(1.0,), flip=False, crf=None, pad_to=None):
        from deeplab_keras.models import resize_logits, wrap_msc

        scales = tuple(float(s) for s in scales)
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"scales must be positive numbers. Received: scales={scales}")
        if 1.0 not in scales:
            raise ValueError(f"scales must contain 1.0. Received: scales={scales}")
        if crf is True:
            from deeplab_keras.crf import DenseCRF

            crf = DenseCRF()
        if pad_to is not None and (isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 1):
            raise ValueError(f"pad_to must be None or a positive int. Received: pad_to={pad_to!r}")
        self.scales, self.flip, self.crf, self.pad_to = scales, bool(flip), crf, pad_to
        net = model if scales == (1.0,) else wrap_msc(model, scales)

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)],
                     reduce_retracing=True)
        def full_logits(image):
            size = tf.shape(image)[:2]
            if self.pad_to is not None:  # DeepLab's test protocol: pad with the mean (0), crop after
                padded = tf.maximum(size, self.pad_to)
                image = tf.pad(image, [[0, padded[0] - size[0]], [0, padded[1] - size[1]], [0, 0]])
            batch = image[None]
            if self.flip:
                batch = tf.concat([batch, tf.reverse(batch, axis=[2])], axis=0)
            logits = resize_logits(net(batch, training=False), tf.shape(image)[:2])
            if self.flip:
                logits = 0.5 * (logits[0] + tf.reverse(logits[1], axis=[1]))
            else:
                logits = logits[0]
            return tf.cast(logits[:size[0], :size[1]], tf.float32)

        self._full_logits = full_logits
        if crf is not None:
            # The class count is declared where the network knows it: with C
            # unknown the CRF cannot split the classes into its per-core
            # chunks and filters them spatially by a transposed conv2d (1.44x
            # slower at 375x500x21).
            num_classes = net.output_shape[-1] if hasattr(net, "output_shape") else None
            @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32),
                                          tf.TensorSpec([None, None, num_classes], tf.float32)],
                         reduce_retracing=True)
            def refine(image, logits):
                rgb = deprocess_images(image)
                return crf(rgb[None], logits[None])[0]

            self._refine = refine

    def __call__(self, image):
        logits = self._full_logits(tf.convert_to_tensor(image, tf.float32))
        if self.crf is not None:
            logits = self._refine(tf.convert_to_tensor(image, tf.float32), logits)
        return logits

    def labels(self, image):
        return tf.argmax(self(image), axis=-1, output_type=tf.int32).numpy()


def _read_example(example, num_classes, read_label=None):
    """(preprocessed float32 [H, W, 3], int [H, W] labels) of a `voc.Example`, checked.

    `read_label(path) -> uint8 [H, W]` decodes the label (default: the VOC
    decoder; your own data: `custom.Dataset.read_label`, through its class table).
    """
    from deeplab_keras.data import decode

    image = decode.read_image(example.image_path)
    label = np.asarray((read_label or decode.read_label)(example.label_path))
    if label.shape != image.shape[:2]:
        raise ValueError(f"Image and label sizes differ: {example.image_path} is "
                         f"{image.shape[0]}x{image.shape[1]}, {example.label_path} is "
                         f"{label.shape[0]}x{label.shape[1]}")
    bad = (label != IGNORE_LABEL) & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise ValueError(f"{example.label_path} has label values outside [0, {num_classes}) "
                         f"and {IGNORE_LABEL}: {sorted(set(label[bad].tolist()))[:10]}")
    return preprocess_images(image), label


def evaluate_examples(model, examples, num_classes, *, scales=(1.0,), flip=False, crf=None,
                      class_names=None, verbose=True, settings=None, pad_to=None,
                      read_label=None):
    """Evaluate `model` on a list of `deeplab_keras.data.voc.Example`s.

    An example that fails (unreadable or truncated file, size mismatch, bad label
    values, an error in the model) is recorded in `failed` and the rest is
    evaluated; the mIoU covers the images that succeeded.

    Args:
      model: single-scale DeepLab model.
      examples: iterable of objects with `name`, `image_path`, `label_path`.
      num_classes: C.
      scales, flip, crf, pad_to: see `Predictor` (pad_to=513 is DeepLab's protocol).
      class_names: C names for the table (default "class_<i>").
      verbose: print progress and each failure.
      settings: extra entries for `EvalResult.settings`.
      read_label: label decoder `path -> uint8 [H, W]` (default: VOC's).

    Returns:
      `EvalResult`.
    """
    from deeplab_keras.data.decode import DataError

    examples = list(examples)
    if class_names is None:
        class_names = [f"class_{i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"class_names must have num_classes={num_classes} entries. "
                         f"Received: {len(class_names)} names")
    predictor = Predictor(model, scales, flip, crf, pad_to=pad_to)
    acc = ConfusionMatrix(num_classes)
    failed, done = [], 0
    start = time.time()
    for k, ex in enumerate(examples):
        try:
            image, label = _read_example(ex, num_classes, read_label)
            prediction = predictor.labels(image)
            acc.update(label, prediction)
            done += 1
        except (DataError, ValueError, OSError, tf.errors.OpError) as e:
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            failed.append((ex.name, message))
            if verbose:
                print(f"[evaluate] FAILED {ex.name}: {message}", flush=True)
        if verbose and ((k + 1) % 50 == 0 or k + 1 == len(examples)):
            print(f"[evaluate] {k + 1}/{len(examples)} images, running mIoU "
                  f"{acc.mean_iou():.4f}", flush=True)
    info = {"scales": list(predictor.scales), "flip": predictor.flip, "pad_to": pad_to,
            "crf": None if crf is None else _crf_params(predictor.crf),
            "seconds": round(time.time() - start, 2)}
    info.update(settings or {})
    cm = acc.matrix
    return EvalResult(miou=mean_iou(cm), iou=iou_per_class(cm).tolist(), class_names=list(class_names),
                      confusion=cm, pixel_accuracy=pixel_accuracy(cm),
                      mean_class_accuracy=mean_class_accuracy(cm), num_images=done,
                      failed=failed, settings=info)


def _crf_params(crf):
    return {k: getattr(crf, k) for k in ("iterations", "spatial_weight", "spatial_sigma",
                                         "bilateral_weight", "bilateral_spatial_sigma",
                                         "bilateral_color_sigma", "spatial_kernel")}


def evaluate_split(model, data_dir, split="val", *, num_classes, scales=(1.0,), flip=False,
                   crf=None, class_names=None, limit=None, sbd_dir=None, tfds=False,
                   tfds_data_dir=None, tfds_manual_dir=None, verbose=True, pad_to=None,
                   ignore_value=IGNORE_LABEL, unknown_color="error", ignore_classes=None):
    """Evaluate on a VOCdevkit split (files), your own data, or the TFDS builder's split.

    Args:
      model: single-scale DeepLab model.
      data_dir: VOCdevkit directory, or a folder of your own data in a layout of
        `deeplab_keras.data.custom` (its masks are read through its class table
        and `class_names` defaults to the table's names); ignored with `tfds`.
      split: "val" etc.
      num_classes, scales, flip, crf, class_names, pad_to: see `evaluate_examples`.
      limit: evaluate only the first `limit` images (None: all).
      sbd_dir: for SBD-based splits.
      tfds, tfds_data_dir, tfds_manual_dir: read the TFDS builder instead.
      verbose: progress output.
      ignore_value, unknown_color, ignore_classes: mask options of your own
        data (`custom.open_dataset`; None ignore_classes: its default).

    Returns:
      `EvalResult`.

    Raises:
      ValueError: num_classes or class_names do not match your dataset's table.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None. Received: limit={limit!r}")
    settings = {"split": split}
    if tfds:
        return _evaluate_tfds(model, split, num_classes, scales, flip, crf, class_names, limit,
                              tfds_data_dir, tfds_manual_dir, verbose, settings, pad_to)
    from deeplab_keras.data import custom, voc

    if data_dir is None:
        raise ValueError("data_dir is required unless tfds=True. Received: data_dir=None")
    read_label = None
    if custom.source_kind(data_dir) == "voc":
        examples = voc.list_examples(str(data_dir), split, sbd_dir=sbd_dir)
    else:
        dataset = custom.open_dataset(
            data_dir, ignore_value=ignore_value, unknown_color=unknown_color,
            ignore_classes=custom.DEFAULT_IGNORE_CLASSES if ignore_classes is None
            else ignore_classes)
        if num_classes != dataset.num_classes:
            raise ValueError(
                f"num_classes={num_classes} does not match the dataset at {dataset.root}, "
                f"which has {dataset.num_classes} classes ({', '.join(dataset.class_names)}). "
                f"Received: num_classes={num_classes}")
        examples = dataset.examples(split)
        read_label = dataset.read_label
        if class_names is None:
            class_names = list(dataset.class_names)
        settings["layout"] = dataset.layout
    if limit is not None:
        examples = examples[:limit]
    settings["data_dir"] = str(data_dir)
    return evaluate_examples(model, examples, num_classes, scales=scales, flip=flip, crf=crf,
                             class_names=class_names, verbose=verbose, settings=settings,
                             pad_to=pad_to, read_label=read_label)


def _evaluate_tfds(model, split, num_classes, scales, flip, crf, class_names, limit,
                   data_dir, manual_dir, verbose, settings, pad_to=None):
    from deeplab_keras.data import make_tfds_dataset

    config = "train_aug" if split == "train_aug" else "segmentation"
    ds = make_tfds_dataset(split, config=config, training=False, batch_size=1,
                           num_classes=num_classes, data_dir=data_dir, manual_dir=manual_dir,
                           on_error="skip")
    if limit is not None:
        ds = ds.take(limit)
    predictor = Predictor(model, scales, flip, crf, pad_to=pad_to)
    acc = ConfusionMatrix(num_classes)
    count = 0
    start = time.time()
    for images, labels in ds:
        acc.update(labels[0].numpy(), predictor.labels(images[0]))
        count += 1
    if class_names is None:
        class_names = [f"class_{i}" for i in range(num_classes)]
    cm = acc.matrix
    settings.update(scales=list(predictor.scales), flip=predictor.flip, tfds=True,
                    crf=None if crf is None else _crf_params(predictor.crf),
                    seconds=round(time.time() - start, 2))
    return EvalResult(miou=mean_iou(cm), iou=iou_per_class(cm).tolist(), class_names=list(class_names),
                      confusion=cm, pixel_accuracy=pixel_accuracy(cm),
                      mean_class_accuracy=mean_class_accuracy(cm), num_images=count, failed=[],
                      settings=settings)
