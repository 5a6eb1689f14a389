"""Write the two tutorial notebooks from the cell sources below (outputs stripped).

The notebooks are generated rather than edited by hand so that git holds
reviewable Python and no outputs; tests/test_notebooks.py executes them.

    python notebooks/make_notebooks.py          # rewrite both .ipynb files
    python notebooks/make_notebooks.py --check  # fail if they are out of date
"""

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------- #
# 01: train and evaluate
# --------------------------------------------------------------------------- #

NB01 = [
    ("md", """\
# DeepLab on Keras 3: train and evaluate

This notebook walks through the library's training path end to end, on the
**built-in dataset** (synthetic scenes in the PASCAL VOC on-disk layout, so the
very same readers and pipeline serve real VOC 2012):

1. the data through the `tf.data` pipeline (random scale, pad, crop, flip);
2. a DeepLab v1 network, VGG16-LargeFOV (`build_model`);
3. `model.fit` with the DeepLab loss: softmax cross-entropy at output stride 8,
   label 255 ignored;
4. the training curves from the CSV log;
5. mIoU on the validation split;
6. predictions before and after the fully connected CRF.

It runs in about a minute on a 2-core CPU because the network is 1/8 of VGG16's
width, starts from scratch and trains for 300 steps on 97×97 crops. It shows the
pipeline, not DeepLab's accuracy: the paper recipe (ImageNet initialisation,
SGD, 6K–20K iterations on VOC) is `python train.py --preset deeplab-v1-largefov`."""),
    ("code", """\
%matplotlib inline
import os
import tempfile
from pathlib import Path

import keras
import numpy as np

import deeplab_keras
from deeplab_keras import viz

SEED = 0
keras.utils.set_random_seed(SEED)  # weights, augmentation order and dropout

# Everything the notebook writes goes to a temporary folder (set DEEPLAB_NOTEBOOK_DIR to keep it).
WORK_DIR = Path(os.environ.get("DEEPLAB_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="deeplab_nb01_"))
WORK_DIR.mkdir(parents=True, exist_ok=True)
print(f"keras {keras.__version__}, deeplab_keras {deeplab_keras.__version__}; writing to {WORK_DIR}")"""),
    ("md", """\
## 1. Data

`ensure_builtin()` generates the built-in dataset once (a few seconds) into
`~/.keras/datasets/deeplab_keras_builtin`, or `$DEEPLAB_KERAS_DATA_DIR`:
JPEG images, palette-PNG labels with 255 on object boundaries, and the
`ImageSets/Segmentation` split lists, exactly like `VOCdevkit/VOC2012`.
For real VOC, pass the `VOCdevkit` folder to `make_dataset` instead.

Training batches are preprocessed the Caffe way (BGR, ImageNet mean
subtracted); `deprocess_images` turns them back into RGB for display. Padding
added by the random crop shows as the mean colour with label 255 (ignored)."""),
    ("code", """\
from deeplab_keras.data import builtin, make_dataset
from deeplab_keras.preprocessing import deprocess_images

voc_dir = builtin.ensure_builtin()
NUM_CLASSES, CLASS_NAMES = builtin.NUM_CLASSES, builtin.CLASS_NAMES
print(voc_dir, "|", NUM_CLASSES, "classes:", ", ".join(CLASS_NAMES))

CROP, BATCH = 97, 8
train_ds = make_dataset(voc_dir, "train", training=True, batch_size=BATCH, crop_size=CROP,
                        num_classes=NUM_CLASSES, seed=SEED, cache=True, repeat=True)
images, labels = next(iter(train_ds))
print("images", images.shape, images.dtype, "| labels", labels.shape, labels.dtype)
viz.side_by_side(deprocess_images(images.numpy()[:3]), ground_truths=labels.numpy()[:3],
                 class_names=CLASS_NAMES, style="overlay", column_width=2.0)"""),
    ("md", """\
## 2. Model

`build_model("vgg16_largefov")` is DeepLab v1: VGG16 with pool4/pool5 at stride 1,
dilated conv5 and a 3×3 fc6 with dilation 12, so the logits come out at 1/8 of
the input resolution. `width_multiplier=0.125` divides every layer's width by 8
for this CPU demo (the real network is `width_multiplier=1.0` with
`backbone_weights="imagenet"`)."""),
    ("code", """\
from deeplab_keras.models import OUTPUT_STRIDE, build_model, classifier_layers

model = build_model("vgg16_largefov", num_classes=NUM_CLASSES, width_multiplier=0.125,
                    dropout=0.0)
print(f"{model.count_params():,} parameters; a {CROP}x{CROP} crop gives logits of shape "
      f"{tuple(model(images[:1]).shape)} (output stride {OUTPUT_STRIDE})")

# Without ImageNet weights the 15 ReLU convolutions start from Keras's default Glorot
# initialisation, which roughly halves the signal variance at every layer, and a run of
# a few hundred steps barely moves. He initialisation (He et al., 2015) keeps the
# variance; the classifier keeps DeepLab's N(0, 0.01) initialisation.
he_normal = keras.initializers.HeNormal(seed=SEED)
classifier = {layer.name for layer in classifier_layers(model)}
for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D) and layer.name not in classifier:
        kernel, bias = layer.get_weights()
        layer.set_weights([np.asarray(he_normal(kernel.shape)), bias])"""),
    ("md", """\
## 3. Training with `model.fit`

The loss is DeepLab's: labels are reduced to the logits' 1/8 grid by nearest
neighbour and pixels labelled 255 contribute nothing. The schedule is DeepLab
v2's "poly" (`lr · (1 − step/max_steps)^0.9`). The optimiser is Adam rather
than the paper's SGD with momentum: from scratch and in 300 steps, SGD does not
get anywhere (the paper's SGD recipe starts from ImageNet weights; see
`deeplab_keras.training.make_optimizer`).

The library's `EpochMeanIoU` callback (the one `train.py` uses) adds the
validation mIoU (first 20 val images, full resolution) to each epoch's logs, so
`CSVLogger` writes it next to the loss."""),
    ("code", """\
from deeplab_keras.evaluation import evaluate_split
from deeplab_keras.training import SegmentationCrossEntropy
from deeplab_keras.training.callbacks import EpochMeanIoU

# 6 epochs of 50 steps; DEEPLAB_NOTEBOOK_STEPS_PER_EPOCH shortens them (the test suite uses 15).
STEPS_PER_EPOCH = int(os.environ.get("DEEPLAB_NOTEBOOK_STEPS_PER_EPOCH", 50))
STEPS = 6 * STEPS_PER_EPOCH
schedule = keras.optimizers.schedules.PolynomialDecay(1e-3, STEPS, end_learning_rate=0.0,
                                                      power=0.9)
model.compile(optimizer=keras.optimizers.Adam(schedule), loss=SegmentationCrossEntropy())
val_miou = EpochMeanIoU(lambda: evaluate_split(model, voc_dir, "val", num_classes=NUM_CLASSES,
                                               limit=20, verbose=False).miou)

log_path = WORK_DIR / "training_log.csv"
history = model.fit(train_ds, epochs=STEPS // STEPS_PER_EPOCH, steps_per_epoch=STEPS_PER_EPOCH,
                    callbacks=[val_miou, keras.callbacks.CSVLogger(str(log_path))])"""),
    ("code", """\
print(log_path.read_text())
viz.plot_training_curves(log_path)"""),
    ("md", """\
## 4. mIoU on the validation split

`evaluate_split` predicts every val image at full resolution (logits upsampled
bilinearly, as in DeepLab) and accumulates one confusion matrix; the IoU of each
class is TP / (TP + FP + FN) over the whole split, pixels labelled 255 ignored."""),
    ("code", """\
from deeplab_keras.evaluation import format_table

result = evaluate_split(model, voc_dir, "val", num_classes=NUM_CLASSES,
                        class_names=list(CLASS_NAMES), verbose=False)
print(format_table(result))"""),
    ("md", """\
## 5. Before and after the dense CRF

DeepLab refines the upsampled scores with a fully connected CRF (Krähenbühl &
Koltun 2011): mean-field inference with a Gaussian smoothness kernel and a
bilateral appearance kernel, so labels snap to colour edges. `DenseCRF` runs it
with TensorFlow ops, here with DeepLab v2's settings (w1 = 4, σα = 67, σβ = 3,
w2 = 3, σγ = 1, 10 iterations)."""),
    ("code", """\
from deeplab_keras.crf import DenseCRF
from deeplab_keras.data import decode, voc
from deeplab_keras.models import resize_logits
from deeplab_keras.preprocessing import preprocess_images

crf = DenseCRF()
examples = voc.list_examples(voc_dir, "val")[:3]
rgbs, before, after, truth = [], [], [], []
for example in examples:
    rgb = decode.read_image(example.image_path)
    logits = resize_logits(model(preprocess_images(rgb[None])), rgb.shape[:2])
    probabilities = crf(rgb[None].astype("float32"), logits)
    rgbs.append(rgb)
    before.append(np.argmax(logits[0], axis=-1))
    after.append(np.argmax(probabilities[0], axis=-1))
    truth.append(decode.read_label(example.label_path))
viz.side_by_side(rgbs, before, after, truth, class_names=CLASS_NAMES,
                 titles=[e.name for e in examples], column_width=2.5)"""),
    ("code", """\
subset = dict(num_classes=NUM_CLASSES, limit=20, verbose=False)
plain = evaluate_split(model, voc_dir, "val", **subset)
refined = evaluate_split(model, voc_dir, "val", crf=crf, **subset)
print(f"first 20 val images: mIoU {plain.miou:.3f} before the CRF, {refined.miou:.3f} after")"""),
    ("md", """\
## 6. Save, and segment image files

`model.save` writes a `.keras` file that `keras.models.load_model` reads back
(the custom layers are registered). `predict_paths` — the library form of the
`deeplab-predict` command — segments image files or folders and writes VOC
palette PNGs (pixel value = class id) and colour overlays:

```
deeplab-predict photos/ --model model.keras --output-dir out/ --crf
```"""),
    ("code", """\
from PIL import Image

from deeplab_keras.predict import predict_paths

checkpoint = WORK_DIR / "model.keras"
model.save(checkpoint)
summary = predict_paths([e.image_path for e in examples], checkpoint, WORK_DIR / "predictions",
                        crf=True)
Image.open(summary.written[0][2])  # the first overlay"""),
]

# --------------------------------------------------------------------------- #
# 02: export and deploy
# --------------------------------------------------------------------------- #

NB02 = [
    ("md", """\
# DeepLab on Keras 3: export and deploy

One Keras model, three deployment formats, each with the preprocessing (Caffe
BGR, mean subtraction), the bilinear upsampling of the stride-8 logits and the
argmax inside the exported graph, so clients send plain RGB images:

| format | written by | runs with |
| --- | --- | --- |
| SavedModel (TF Serving layout `<name>/<version>/`) | `export_saved_model` | TF Serving, `tf.saved_model.load` |
| TFLite, fixed input size, builtin ops only | `export_tflite` | `ai_edge_litert` Interpreter |
| ONNX | `export_onnx` (tf2onnx) | onnxruntime |

We export, run each format on the same images, check the masks agree with
Keras, and finish with the request body TF Serving's REST API expects.

The model: set `DEEPLAB_CHECKPOINT` to a `.keras` file (from notebook 01 or
`train.py`); otherwise a small randomly initialised network is used, which is
all the format comparison needs. Runs in about a minute on a 2-core CPU."""),
    ("code", """\
%matplotlib inline
import base64
import io
import json
import os
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_keras import viz
from deeplab_keras.data import builtin, decode, voc
from deeplab_keras.models import build_model

SEED = 0
keras.utils.set_random_seed(SEED)
WORK_DIR = Path(os.environ.get("DEEPLAB_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="deeplab_nb02_"))
WORK_DIR.mkdir(parents=True, exist_ok=True)

checkpoint = os.environ.get("DEEPLAB_CHECKPOINT")
if checkpoint:
    model = keras.models.load_model(checkpoint, compile=False)
else:
    model = build_model("vgg16_largefov", num_classes=builtin.NUM_CLASSES,
                        width_multiplier=0.125, model_name="deeplab_builtin")
print(f"model {model.name}: {model.count_params():,} parameters, "
      f"{model.output_shape[-1]} classes; writing to {WORK_DIR}")"""),
    ("md", """\
## Test images and the Keras reference

TFLite and ONNX are exported at a fixed input size (a static shape lets the
TFLite converter fold TensorFlow's dilated-convolution rewrite back into one
`CONV_2D`), so the comparison uses val images resized to that size.
`reference_outputs` runs the Keras model with the same pre- and
post-processing as the exported graphs."""),
    ("code", """\
from deeplab_keras.export.checks import compare_outputs, reference_outputs

SIZE = (120, 160)  # (height, width) of the TFLite / ONNX input
voc_dir = builtin.ensure_builtin()
examples = voc.list_examples(voc_dir, "val")[:4]
images = np.stack([
    np.asarray(Image.fromarray(decode.read_image(e.image_path)).resize(SIZE[::-1], Image.BILINEAR))
    for e in examples]).astype(np.float32)  # RGB 0-255, [N, H, W, 3]
reference = reference_outputs(model, images)
print({k: v.shape for k, v in reference.items()})"""),
    ("md", """\
## SavedModel for TF Serving

`export_saved_model` writes `savedmodels/<name>/<version>/` atomically with three
signatures: `serving_default` on encoded image bytes (JPEG/PNG/GIF/BMP, any
size; what TF Serving's REST API sends), `serving_images` on float RGB batches,
and `serving_logits` for the raw stride-8 scores."""),
    ("code", """\
from deeplab_keras.export import export_saved_model

saved_dir = export_saved_model(model, WORK_DIR / "savedmodels" / model.name)
print(saved_dir, sorted(p.name for p in saved_dir.iterdir()))
served = tf.saved_model.load(str(saved_dir))
print("signatures:", sorted(served.signatures))

batch = tf.constant(images)
saved_model_out = {
    "labels": served.signatures["serving_images"](images=batch)["labels"].numpy(),
    "logits": served.signatures["serving_logits"](images=batch)["logits"].numpy(),
}
compare_outputs(reference, saved_model_out)"""),
    ("md", """\
## TFLite

A float32 TFLite file at the fixed size, run with the LiteRT interpreter
(`ai_edge_litert`, the successor of `tf.lite.Interpreter`). Its signature takes
float RGB `images` [1, H, W, 3] and returns `labels` and `logits`."""),
    ("code", """\
from ai_edge_litert.interpreter import Interpreter

from deeplab_keras.export import export_tflite

tflite_path = export_tflite(model, WORK_DIR / "model.tflite", size=SIZE)
runner = Interpreter(model_path=str(tflite_path)).get_signature_runner("serving_default")
outputs = [runner(images=image[None]) for image in images]
tflite_out = {key: np.concatenate([o[key] for o in outputs]) for key in ("labels", "logits")}
print(f"{tflite_path.name}: {tflite_path.stat().st_size / 1e6:.2f} MB")
compare_outputs(reference, tflite_out)"""),
    ("md", """\
## ONNX

Converted with tf2onnx from the same graph and checked by loading it in
onnxruntime before the file is written."""),
    ("code", """\
import onnxruntime as ort

from deeplab_keras.export import export_onnx

onnx_path = export_onnx(model, WORK_DIR / "model.onnx", size=SIZE)
session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
outputs = [session.run(["labels", "logits"], {"images": image[None]}) for image in images]
onnx_out = {"labels": np.concatenate([o[0] for o in outputs]),
            "logits": np.concatenate([o[1] for o in outputs])}
print(f"{onnx_path.name}: {onnx_path.stat().st_size / 1e6:.2f} MB")
compare_outputs(reference, onnx_out)"""),
    ("md", "## The masks side by side"),
    ("code", """\
results = {"SavedModel": saved_model_out, "TFLite": tflite_out, "ONNX": onnx_out}
for name, out in results.items():
    scores = compare_outputs(reference, out)
    print(f"{name:10s} pixels agreeing with Keras {scores['label_agreement']:8.4%}   "
          f"max |logit difference| {scores['logits_max_abs_diff']:.1e}")
columns = {"Keras": reference["labels"], **{k: v["labels"] for k, v in results.items()}}
viz.label_grid(images, columns, class_names=builtin.CLASS_NAMES, column_width=2.0)"""),
    ("md", """\
## Serving over REST

Point TF Serving at the model folder (it picks the highest version):

```
docker run -p 8501:8501 \\
  -v "$PWD/savedmodels/deeplab_builtin:/models/deeplab_builtin" \\
  -e MODEL_NAME=deeplab_builtin tensorflow/serving
```

The `serving_default` signature has one string input, so each instance is the
encoded image itself, base64-wrapped as `{"b64": ...}`. The response holds, per
image, `labels` (class ids at the image's own size; a batch of different sizes
is padded with 255) and its `height` and `width`. Below is the request body,
and the same request answered in-process by the loaded SavedModel, which is
what TF Serving does with it."""),
    ("code", """\
buffer = io.BytesIO()
Image.open(examples[0].image_path).save(buffer, format="JPEG", quality=95)
body = {"signature_name": "serving_default",
        "instances": [{"b64": base64.b64encode(buffer.getvalue()).decode("ascii")}]}
(WORK_DIR / "request.json").write_text(json.dumps(body))
print(json.dumps(body)[:160], "...")
print(f"\\ncurl -d @request.json http://localhost:8501/v1/models/{model.name}:predict")

image_bytes = tf.constant([base64.b64decode(i["b64"]) for i in body["instances"]])
response = served.signatures["serving_default"](image_bytes=image_bytes)
height, width = int(response["height"][0]), int(response["width"][0])
labels = response["labels"][0, :height, :width].numpy()
print(f"\\nlabels {labels.shape}, classes present: {np.unique(labels).tolist()}")"""),
]


def build(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md"
                else nbformat.v4.new_code_cell(src) for kind, src in cells]
    # Stable cell ids keep regenerated files identical (reviewable diffs).
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    return nb


NOTEBOOKS = {"01_train_and_evaluate.ipynb": NB01, "02_export_and_deploy.ipynb": NB02}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a notebook differs from its generated form")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(build(cells)) + "\n"
        path = HERE / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        tmp = path.with_suffix(".ipynb.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run python notebooks/make_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
