"""One user's path, end to end, through the installed console scripts.

1. a released-layout caffemodel (DeepLab v1 LargeFOV, V1 format, the official
   layer names; reduced width) stands in for the download;
2. `deeplab-convert` turns it into a `.keras`;
3. a fresh process runs `import deeplab_keras, keras` + `keras.models.load_model`
   on it and wraps it in `wrap_msc`;
4. `deeplab-predict --crf` segments a JPEG into a VOC-coloured label PNG, with
   legend.png of the VOC class names;
5. `deeplab-export` writes a SavedModel and a TFLite float32 model; both are
   reloaded and their labels checked against the Keras model's.

Every step is a real subprocess, as a user would type it.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.helpers import write_released_caffemodel

BIN = pathlib.Path(sys.executable).parent
SIZE = 65  # the photo is SIZE x SIZE, the TFLite export's fixed size


def _script(name):
    path = BIN / name
    assert path.is_file(), f"console script {name} is not installed beside {sys.executable}"
    return str(path)


def _run(argv, cwd, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _photo(path):
    """Smooth colour blobs (a random net then predicts several classes), saved as JPEG."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rgb = np.stack([np.sin(5 * xx * rng.uniform(0.5, 2) + 3 * yy * rng.uniform(0.5, 2)
                           + rng.uniform(0, 6)) for _ in range(3)], -1)
    Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8)).save(path, quality=95)
    return np.asarray(Image.open(path).convert("RGB"))  # what every reader decodes


def _keras_labels(model, rgb, crf=False):
    from deeplab_keras.crf import DenseCRF
    from deeplab_keras.models import resize_logits
    from deeplab_keras.preprocessing import preprocess_images

    logits = resize_logits(model(preprocess_images(rgb[None])), rgb.shape[:2])
    if crf:
        return np.argmax(np.asarray(DenseCRF()(rgb[None], logits))[0], -1)
    return np.argmax(np.asarray(logits)[0], -1)


def test_convert_load_msc_predict_export(tmp_path):
    import keras
    import tensorflow as tf

    # 1. The stand-in release.
    src, width = write_released_caffemodel(tmp_path / "train_iter_6000.caffemodel", seed=11)
    rgb = _photo(tmp_path / "photo.jpg")

    # 2. deeplab-convert.
    out = _run([_script("deeplab-convert"), str(src), "--output", "converted.keras",
                "--width-multiplier", str(width)], tmp_path)
    assert "vgg16_largefov" in out and "leftovers (unused source tensors): none" in out
    converted = tmp_path / "converted.keras"

    # 3. A fresh process: the Keras way to load it, then the MSC wrapper.
    code = textwrap.dedent(f"""
        import json
        import numpy as np
        import deeplab_keras, keras
        model = keras.models.load_model({str(converted)!r}, compile=False)
        msc = deeplab_keras.models.wrap_msc(model)
        x = np.load({str(tmp_path / "x.npy")!r})
        single, fused = np.asarray(model(x)), np.asarray(msc(x))
        np.save({str(tmp_path / "single.npy")!r}, single)
        np.save({str(tmp_path / "fused.npy")!r}, fused)
        print(json.dumps({{"classes": model.output_shape[-1], "msc_inputs": len(msc.inputs)}}))
    """)
    from deeplab_keras.preprocessing import preprocess_images

    x = np.asarray(preprocess_images(rgb[None]), np.float32)
    np.save(tmp_path / "x.npy", x)
    info = json.loads(_run([sys.executable, "-c", code], tmp_path).strip().splitlines()[-1])
    assert info == {"classes": 21, "msc_inputs": 1}
    model = keras.models.load_model(converted, compile=False)
    single, fused = np.load(tmp_path / "single.npy"), np.load(tmp_path / "fused.npy")
    # The fresh process computed what this one does (same weights, same float32 ops;
    # only the summation order may differ: eps x ~1e3-term sums, well under 1e-5 relative).
    ref = np.asarray(model(x))
    np.testing.assert_allclose(single, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    # Max fusion over scales 1, 0.75, 0.5: at least the scale-1 logits everywhere
    # (the scale-1 map is not resized, so this holds exactly).
    assert fused.shape == single.shape and np.all(fused >= single)
    assert np.any(fused > single)

    # 4. deeplab-predict --crf: VOC palette PNG, legend of the VOC names.
    _run([_script("deeplab-predict"), "photo.jpg", "--model", "converted.keras",
          "--output-dir", "out", "--crf", "-q"], tmp_path)
    from deeplab_keras.labels import VOC_CLASSES
    from deeplab_keras.palette import VOC_PALETTE
    from deeplab_keras.viz import legend_image

    png = Image.open(tmp_path / "out" / "labels" / "photo.png")
    assert png.mode == "P" and png.size == (SIZE, SIZE)
    palette = np.asarray(png.getpalette()[:21 * 3], np.uint8).reshape(21, 3)
    np.testing.assert_array_equal(palette, VOC_PALETTE[:21])
    labels = np.asarray(png)
    expected = _keras_labels(model, rgb, crf=True)
    # The same network and CRF code in another process; an argmax may flip only
    # where two classes tie to float round-off.
    assert np.mean(labels == expected) >= 0.999, np.mean(labels == expected)
    assert len(np.unique(labels)) >= 2  # a real segmentation, not one class everywhere
    legend = np.asarray(Image.open(tmp_path / "out" / "legend.png").convert("RGB"))
    np.testing.assert_array_equal(legend, legend_image(VOC_CLASSES))

    # 5. deeplab-export: SavedModel + TFLite float32, reloaded, labels vs Keras.
    _run([_script("deeplab-export"), "converted.keras", "--formats", "saved_model,tflite_float32",
          "--size", str(SIZE)], tmp_path)
    base = tmp_path / "savedmodels" / "converted"
    version = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    served = tf.saved_model.load(str(version))
    with open(tmp_path / "photo.jpg", "rb") as f:
        out = served.signatures["serving_default"](image_bytes=tf.constant([f.read()]))
    keras_labels = _keras_labels(model, rgb)
    sm_labels = out["labels"].numpy()[0]
    assert sm_labels.shape == (SIZE, SIZE)
    # In-graph JPEG decode (TF's decoder vs PIL's) may move a pixel value by 1, so
    # allow a sliver of boundary pixels to flip.
    assert np.mean(sm_labels == keras_labels) >= 0.99, np.mean(sm_labels == keras_labels)

    from ai_edge_litert.interpreter import Interpreter

    (tflite,) = (base / "tflite").glob("*.tflite")
    runner = Interpreter(model_path=str(tflite)).get_signature_runner()
    tfl_labels = np.asarray(runner(images=rgb[None].astype("float32"))["labels"])[0]
    # Same pixels in; XNNPACK's float32 sums differ from oneDNN's only by round-off.
    assert np.mean(tfl_labels == keras_labels) >= 0.999, np.mean(tfl_labels == keras_labels)
