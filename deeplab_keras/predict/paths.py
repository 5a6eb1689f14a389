"""`predict_paths`: segment image files and folders, writing labels, overlays and a legend."""

import sys
from pathlib import Path

import numpy as np

from deeplab_keras.predict import predictor as _predictor
from deeplab_keras.predict.inputs import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageReadError,
                                          _list_inputs, _open_image, _output_names)
from deeplab_keras.predict.outputs import (PredictSummary, _prepare_output_dir, _save_jpeg,
                                           class_legend)
from deeplab_keras.predict.loading import load_predictor
from deeplab_keras.predict.predictor import _make_crf


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

    # Own-data models: the classes.json colours, every class coloured; VOC / COCO /
    # COCO-Stuff-sized models: the VOC colour map, background left uncoloured.
    names, palette, transparent = class_legend(model_path, predictor)
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
            labels = _predictor.predict_image(predictor, image, crf=crf_layer)
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
    if names is not None:
        legend = output_dir / "legend.png"
        with viz.atomic_path(legend) as tmp:
            Image.fromarray(viz.legend_image(names, palette)).save(tmp, format="PNG")
    summary = PredictSummary(written, failed)
    if verbose:
        print(summary)
    return summary
