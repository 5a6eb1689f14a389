"""The pre-scan: every example's files checked before the tf.data pipeline is built.

Header checks by default (`decode.inspect_image` / `inspect_label`: the file
exists, its format, size and tail), a full Python decode with
validate="full". A bad file raises a `DataError` naming it, or is skipped
(on_error="skip", one warning for all). No TensorFlow here.
"""

import logging

import numpy as np

from deeplab_keras.data import decode as dec
from deeplab_keras.palette import IGNORE_LABEL

log = logging.getLogger(__name__)


def scan_examples(examples, num_classes, *, validate="header", on_error="raise",
                  max_image_pixels=dec.DEFAULT_MAX_IMAGE_PIXELS):
    """Check the files of `examples` before building the dataset.

    Args:
      examples: list of `voc.Example`.
      num_classes: int, for label values (only checked with validate="full").
      validate: "header" reads headers and file tails only (about 0.1 ms a
        file); "full" also decodes every image and label with PIL/SciPy and
        checks sizes and label values (a full pass over the data).
      on_error: "raise" the first `DataError`; "skip" drops bad examples.
      max_image_pixels: refuse larger images (header size, nothing allocated).

    Returns:
      (kept examples, their LabelKinds, skipped list of (Example, message)).
    """
    def check(ex):
        ih, iw = dec.inspect_image(ex.image_path, max_image_pixels)
        kind, lsize = dec.inspect_label(ex.label_path, max_image_pixels)
        if lsize is not None and lsize != (ih, iw):
            raise dec.DataError(
                f"Image and label sizes differ: {ex.image_path} is {ih}x{iw}, "
                f"{ex.label_path} is {lsize[0]}x{lsize[1]} (HxW)")
        if validate == "full":
            lab = decode_both(ex, dec.read_label, "label")
            bad = np.unique(lab[(lab >= num_classes) & (lab != IGNORE_LABEL)])
            if bad.size:
                raise dec.DataError(
                    f"Label values outside [0, {num_classes}) and {IGNORE_LABEL} "
                    f"in {ex.label_path}: {bad[:16].tolist()}")
        return kind

    return scan(examples, check, on_error)


def scan(examples, check, on_error):
    """(kept examples, their kinds, skipped [(Example, message)]) of `check(ex) -> kind`.

    A `DataError` from `check` is raised (on_error="raise") or skips the
    example, with one warning for all the skipped.
    """
    kept, kinds, skipped = [], [], []
    for ex in examples:
        try:
            kind = check(ex)
        except dec.DataError as e:
            if on_error == "raise":
                raise
            skipped.append((ex, str(e)))
            continue
        kept.append(ex)
        kinds.append(int(kind))
    if skipped:
        log.warning("Skipped %d of %d examples with bad files; first: %s",
                    len(skipped), len(examples), skipped[0][1])
    return kept, kinds, skipped


def decode_both(ex, read_label, what):
    """validate="full": decode image and label in Python; the label, if sizes agree."""
    img = dec.read_image(ex.image_path)
    lab = read_label(ex.label_path)
    if lab.shape != img.shape[:2]:
        raise dec.DataError(
            f"Image and {what} sizes differ: {ex.image_path} is "
            f"{img.shape[0]}x{img.shape[1]}, {ex.label_path} is "
            f"{lab.shape[0]}x{lab.shape[1]} (HxW)")
    return lab
