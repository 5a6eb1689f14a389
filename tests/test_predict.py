"""deeplab_keras.predict: the `deeplab-predict` command and `predict_paths`.

A reduced-width VGG16-LargeFOV (width_multiplier=0.125, 5 classes, random
weights) stands in for a trained model: what is under test is that the label
PNGs hold exactly the model's argmax, whatever the weights.
"""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deeplab_keras.palette import VOC_PALETTE
from deeplab_keras.predict import main, predict_paths
from tests.helpers import save_tiny_model

NUM_CLASSES = 5


def _structured_image(h, w, seed):
    """Smooth colour blobs, so that a random network predicts several classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    channels = [np.sin(6 * xx * rng.uniform(0.5, 2) + 4 * yy * rng.uniform(0.5, 2)
                       + rng.uniform(0, 6)) for _ in range(3)]
    return ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), NUM_CLASSES, seed=0)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path):
    import keras

    return keras.models.load_model(tiny_model_path, compile=False)


def _keras_argmax(model, rgb):
    """The reference: logits of the Keras model, bilinear to full size, argmax."""
    from deeplab_keras.models import resize_logits
    from deeplab_keras.preprocessing import preprocess_images

    logits = model(preprocess_images(rgb[None]), training=False)
    return np.argmax(np.asarray(resize_logits(logits, rgb.shape[:2]))[0], axis=-1)


@pytest.fixture()
def mixed_folder(tmp_path):
    """Good JPEG/PNG images of different sizes plus two corrupt '.jpg' files."""
    folder = tmp_path / "images"
    folder.mkdir()
    good = {}
    for name, (h, w), fmt in [("a.jpg", (45, 60), "JPEG"), ("b.png", (33, 50), "PNG"),
                              ("c.jpeg", (64, 40), "JPEG")]:
        rgb = _structured_image(h, w, seed=len(good))
        Image.fromarray(rgb).save(folder / name, format=fmt, quality=95)
        # The reference sees the decoded file, exactly as the command does.
        good[name] = np.asarray(Image.open(folder / name).convert("RGB"))
    data = (folder / "a.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("this is not an image\n")
    (folder / "readme.txt").write_text("ignored: not an image extension\n")
    return folder, good


def _read_label_png(path):
    with Image.open(path) as im:
        assert im.mode == "P", f"{path} is {im.mode}, not a palette PNG"
        palette = np.asarray(im.getpalette(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(palette[:256], VOC_PALETTE)
        return np.asarray(im)


def _check_outputs(out_dir, good, reference_fn):
    for name, rgb in good.items():
        stem = name.rsplit(".", 1)[0]
        labels = _read_label_png(out_dir / "labels" / f"{stem}.png")
        expected = reference_fn(rgb)
        assert labels.shape == rgb.shape[:2]
        assert len(np.unique(expected)) > 1, "degenerate reference: one class everywhere"
        np.testing.assert_array_equal(labels, expected)
        with Image.open(out_dir / "overlays" / f"{stem}.jpg") as im:
            assert im.format == "JPEG" and im.size == (rgb.shape[1], rgb.shape[0])


class TestKerasCheckpoint:
    def test_corrupt_files_are_skipped_and_named_rest_equals_argmax(
            self, tiny_model_path, tiny_model, mixed_folder, tmp_path, capsys):
        folder, good = mixed_folder
        out = tmp_path / "out"
        summary = predict_paths([folder], tiny_model_path, out)
        failed = {p.name: reason for p, reason in summary.failed}
        assert set(failed) == {"truncated.jpg", "notes.jpg"}
        assert "truncated" in failed["truncated.jpg"]
        assert "not an image" in failed["notes.jpg"]
        assert sorted(src.name for src, _, _ in summary.written) == sorted(good)
        _check_outputs(out, good, lambda rgb: _keras_argmax(tiny_model, rgb))
        printed = capsys.readouterr()
        assert "3 image(s) segmented, 2 failed" in printed.out
        assert "truncated.jpg" in printed.err and "notes.jpg" in printed.err
        # Only final files: no temporaries left behind by the atomic writes.
        assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.png", "b.png", "c.png"]

    def test_cli_exit_codes_and_summary(self, tiny_model_path, mixed_folder, tmp_path, capsys):
        folder, good = mixed_folder
        code = main([str(folder), "--model", str(tiny_model_path), "-o", str(tmp_path / "o1")])
        assert code == 1
        out = capsys.readouterr().out
        assert "FAILED" in out and "notes.jpg" in out and "truncated.jpg" in out
        # Explicit good files only: success.
        files = [str(folder / n) for n in good]
        assert main(files + ["-m", str(tiny_model_path), "-o", str(tmp_path / "o2"),
                             "--no-overlays", "-q"]) == 0
        assert not (tmp_path / "o2" / "overlays").exists()
        assert len(list((tmp_path / "o2" / "labels").glob("*.png"))) == 3

    def test_same_stem_in_two_folders_gets_two_outputs(self, tiny_model_path, tmp_path):
        for sub, seed in (("x", 1), ("y", 2)):
            (tmp_path / sub).mkdir()
            Image.fromarray(_structured_image(24, 24, seed)).save(tmp_path / sub / "img.png")
        summary = predict_paths([tmp_path / "x", tmp_path / "y"], tiny_model_path,
                                tmp_path / "out", verbose=False)
        assert [p.name for _, p, _ in summary.written] == ["img.png", "img_2.png"]

    def test_crf_output_is_argmax_of_densecrf(self, tiny_model_path, tiny_model, tmp_path):
        from deeplab_keras.crf import DenseCRF
        from deeplab_keras.models import resize_logits
        from deeplab_keras.preprocessing import preprocess_images

        rgb = _structured_image(40, 48, seed=7)
        Image.fromarray(rgb).save(tmp_path / "im.png")
        predict_paths(tmp_path / "im.png", tiny_model_path, tmp_path / "out", crf=True,
                      verbose=False)
        logits = resize_logits(tiny_model(preprocess_images(rgb[None])), rgb.shape[:2])
        probs = DenseCRF()(rgb[None].astype(np.float32), logits)
        expected = np.argmax(np.asarray(probs)[0], axis=-1)
        np.testing.assert_array_equal(_read_label_png(tmp_path / "out/labels/im.png"), expected)

    def test_crf_refinement_runs_the_fast_path(self, tiny_model_path):
        # What `deeplab-predict --crf` runs per image: the layer's compiled call,
        # the sparse class-chunked lattice and the depthwise spatial filter
        # (not the transposed conv2d or the op-by-op eager form).
        from deeplab_keras.crf import DenseCRF
        from deeplab_keras.predict import load_predictor
        from deeplab_keras.predict.predictor import predict_image
        from tests.helpers import assert_runs_fast_crf, ops_run

        predictor = load_predictor(tiny_model_path)
        rgb = _structured_image(40, 48, seed=7)
        crf = DenseCRF(iterations=1)
        assert_runs_fast_crf(ops_run(lambda: predict_image(predictor, rgb, crf=crf)))


class TestExportedModels:
    def test_saved_model_labels_equal_its_own_argmax(self, tiny_model, mixed_folder, tmp_path):
        import tensorflow as tf

        from deeplab_keras.export import export_saved_model
        from deeplab_keras.models import resize_logits

        folder, good = mixed_folder
        version_dir = export_saved_model(tiny_model, tmp_path / "savedmodels" / "tiny")
        served = tf.saved_model.load(str(version_dir))
        logits_sig = served.signatures["serving_logits"]

        def saved_model_argmax(rgb):
            logits = logits_sig(images=tf.constant(rgb[None], tf.float32))["logits"]
            return np.argmax(np.asarray(resize_logits(logits, rgb.shape[:2]))[0], axis=-1)

        # The TF Serving model folder (no version) resolves to its latest version.
        summary = predict_paths(folder, tmp_path / "savedmodels" / "tiny", tmp_path / "out",
                                verbose=False)
        assert len(summary.written) == 3 and len(summary.failed) == 2
        _check_outputs(tmp_path / "out", good, saved_model_argmax)
        # ... and agrees with the Keras checkpoint it came from.
        for rgb in good.values():
            agree = (saved_model_argmax(rgb) == _keras_argmax(tiny_model, rgb)).mean()
            assert agree > 0.999

    def test_saved_model_with_the_crf_in_its_graph(self, tiny_model, tmp_path):
        import tensorflow as tf

        from deeplab_keras.export import export_saved_model

        rgb = _structured_image(40, 48, seed=11)
        Image.fromarray(rgb).save(tmp_path / "im.png")
        from deeplab_keras.crf import DenseCRF

        # A built layer: export_saved_model(crf=True) currently fails on the
        # unbuilt DenseCRF it creates ("layer ... has not yet been built").
        crf = DenseCRF()
        crf(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, NUM_CLASSES), np.float32))
        version_dir = export_saved_model(tiny_model, tmp_path / "sm", crf=crf)
        served = tf.saved_model.load(str(version_dir))
        expected = served.signatures["serving_images"](
            images=tf.constant(rgb[None], tf.float32))["labels"].numpy()[0]
        predict_paths(tmp_path / "im.png", version_dir, tmp_path / "out", verbose=False)
        np.testing.assert_array_equal(_read_label_png(tmp_path / "out/labels/im.png"), expected)
        # A second CRF on top of the exported one is refused, not silently applied.
        with pytest.raises(ValueError, match="already runs the dense CRF"):
            predict_paths(tmp_path / "im.png", version_dir, tmp_path / "out2", crf=True)

    def test_plain_keras_export_saved_model(self, tiny_model, mixed_folder, tmp_path):
        # `model.export()` writes a signature on the model's own (preprocessed) input.
        folder, good = mixed_folder
        tiny_model.export(str(tmp_path / "plain"), verbose=False)
        summary = predict_paths(folder, tmp_path / "plain", tmp_path / "out", verbose=False)
        assert len(summary.written) == 3
        for name, rgb in good.items():
            labels = _read_label_png(tmp_path / "out" / "labels" / (name.rsplit(".", 1)[0] + ".png"))
            agree = (labels == _keras_argmax(tiny_model, rgb)).mean()
            assert agree > 0.999

    def test_saved_model_with_only_an_image_bytes_signature(self, tmp_path):
        # A labels-only serving model (as TF Serving clients see it): the image
        # is sent PNG-encoded, labels come back; here "red channel > 127".
        import json

        import tensorflow as tf

        class BytesOnly(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
            def serve(self, image_bytes):
                image = tf.io.decode_png(image_bytes[0], channels=3)
                return {"labels": tf.cast(image[None, ..., 0] > 127, tf.int32)}

        module = BytesOnly()
        tf.saved_model.save(module, str(tmp_path / "bytes"),
                            signatures={"serving_default": module.serve})
        (tmp_path / "bytes" / "deeplab_export.json").write_text(json.dumps({"num_classes": 2}))
        rgb = _structured_image(30, 40, seed=5)
        Image.fromarray(rgb).save(tmp_path / "im.png")
        predict_paths(tmp_path / "im.png", tmp_path / "bytes", tmp_path / "out", verbose=False)
        np.testing.assert_array_equal(_read_label_png(tmp_path / "out/labels/im.png"),
                                      (rgb[..., 0] > 127).astype(np.uint8))
        with pytest.raises(ValueError, match="labels only"):
            predict_paths(tmp_path / "im.png", tmp_path / "bytes", tmp_path / "o2", crf=True,
                          verbose=False)

    def test_tflite_labels_equal_its_own_argmax(self, tiny_model, mixed_folder, tmp_path):
        from ai_edge_litert.interpreter import Interpreter

        from deeplab_keras.export import export_tflite
        from deeplab_keras.models import resize_logits

        folder, good = mixed_folder
        tflite_path = export_tflite(tiny_model, tmp_path / "tiny.tflite", size=(48, 48))
        interp = Interpreter(model_path=str(tflite_path))
        name = next(iter(interp.get_signature_list()))
        runner = interp.get_signature_runner(name)
        (arg,) = interp.get_signature_list()[name]["inputs"]

        def tflite_argmax(rgb):
            # Fixed-size model: the image is resized to 48x48, logits back.
            small = np.asarray(Image.fromarray(rgb).resize((48, 48), Image.BILINEAR))
            logits = runner(**{arg: small[None].astype(np.float32)})["logits"]
            return np.argmax(np.asarray(resize_logits(logits, rgb.shape[:2]))[0], axis=-1)

        summary = predict_paths(folder, tflite_path, tmp_path / "out", verbose=False)
        assert len(summary.written) == 3 and len(summary.failed) == 2
        _check_outputs(tmp_path / "out", good, tflite_argmax)


def test_module_runs_as_a_script():
    result = subprocess.run([sys.executable, "-m", "deeplab_keras.predict", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--crf" in result.stdout and "SavedModel" in result.stdout


def test_legend_of_voc_class_names_for_a_21_class_model(tmp_path):
    """A released-style (21-class, no classes.json) model: legend.png lists the VOC
    names in VOC colours, one row per class; a model of an unknown class count
    (5 here) gets none, since its class names are unknown."""
    from deeplab_keras.labels import VOC_CLASSES
    from deeplab_keras.viz import legend_image

    path = save_tiny_model(tmp_path, 21, seed=1)
    Image.fromarray(_structured_image(40, 52, seed=3)).save(tmp_path / "x.jpg")
    summary = predict_paths(tmp_path / "x.jpg", path, tmp_path / "out", verbose=False)
    assert summary.ok
    legend = np.asarray(Image.open(tmp_path / "out" / "legend.png").convert("RGB"))
    np.testing.assert_array_equal(legend, legend_image(VOC_CLASSES))
    assert legend.shape[0] == 21 * (20 + 4) + 4
    # Row 15 (person) carries the VOC colour of class 15.
    assert tuple(legend[4 + 15 * 24 + 10, 10]) == tuple(VOC_PALETTE[15])
    labels = np.asarray(Image.open(summary.written[0][1]))
    assert labels.shape == (40, 52) and labels.max() < 21

    (tmp_path / "five").mkdir()
    five = save_tiny_model(tmp_path / "five", NUM_CLASSES, seed=1)
    predict_paths(tmp_path / "x.jpg", five, tmp_path / "out5", verbose=False)
    assert not (tmp_path / "out5" / "legend.png").exists()
