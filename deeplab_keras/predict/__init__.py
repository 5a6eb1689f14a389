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
names. Without one, a model with the class count of a released label set
(VOC 21, COCO 91, COCO-Stuff 182: `deeplab_keras.labels`) gets the VOC colour
map, background left uncoloured, and `OUTPUT/legend.png` with those class
names; any other count gets the VOC colour map and no legend.

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
  >>> summary.failed        # [(Path, reason), ...] for the files that could not be read
  []

Layout: `inputs` (finding and reading images), `predictor` (`Predictor`,
`load_predictor`, `predict_image`) with one runner per model format
(`keras_model`, `saved_model`, `tflite`), `outputs` (output folder, palette,
legend, summary), `paths` (`predict_paths`) and `cli` (`main`).

Example (command line):
  $ deeplab-predict photos/ img.jpg --model runs/builtin/model.keras -o out/ --crf
"""

from deeplab_keras.predict.cli import main
from deeplab_keras.predict.inputs import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, IMAGE_EXTENSIONS,
                                          ImageReadError, read_image)
from deeplab_keras.predict.outputs import PredictSummary, class_legend, find_class_sidecar
from deeplab_keras.predict.loading import load_predictor
from deeplab_keras.predict.paths import predict_paths
from deeplab_keras.predict.predictor import ModelOutputError, Predictor, predict_image

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
    "find_class_sidecar",
    "class_legend",
    "main",
]
