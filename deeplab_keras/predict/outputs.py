"""Outputs of `deeplab-predict`: the output folder, label PNGs' palette, overlays,
the class legend and the run summary."""

import dataclasses
import os
import tempfile
from pathlib import Path



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


def class_legend(model_path, predictor):
    """(class names or None, palette or None, labels left uncoloured in overlays).

    A model with a `classes.json` sidecar (trained on your own data) gets its
    names and colours, every class coloured. Otherwise a model whose class count
    is that of a released label set (`deeplab_keras.labels.labels_for`: VOC 21,
    COCO 91, COCO-Stuff 182) gets those names and the VOC colour map, with
    background (0) left uncoloured in the overlays; any other count gets the VOC
    colour map and no legend (its class names are unknown).
    """
    from deeplab_keras.labels import labels_for

    classes = find_class_sidecar(model_path, predictor)
    if classes is not None:
        from deeplab_keras.data.custom import read_classes_json

        return read_classes_json(classes)[0], _sidecar_palette(classes, predictor), ()
    return labels_for(predictor.num_classes), None, (0,)
