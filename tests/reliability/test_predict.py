"""Reliability of `deeplab-predict` (issue 8): odd images, bad paths and flags,
unusable model outputs, and no lost or half-written output files.

Each test is one case of the reliability table (docs / README). The model is a
reduced-width VGG16-LargeFOV with random weights: the cases are about handling,
not accuracy.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from deeplab_keras import predict
from deeplab_keras.predict import (ImageReadError, ModelOutputError, main, predict_image,
                                   predict_paths, read_image)
from tests.helpers import png_bytes, save_tiny_model

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), NUM_CLASSES, seed=1)


@pytest.fixture(scope="module")
def predictor(model_path):
    return predict.load_predictor(model_path)


def _rgb(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                     np.full((h, w), 128)], -1)
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _labels_of(out_dir, stem):
    with Image.open(out_dir / "labels" / f"{stem}.png") as im:
        assert im.mode == "P"
        return np.asarray(im)


def _write_png16(path, values):
    """A 16-bit PNG written byte by byte (PIL cannot write 16-bit RGB)."""
    import zlib

    values = np.asarray(values, np.uint16)
    h, w = values.shape[:2]
    color_type = 2 if values.ndim == 3 else 0
    raw = b"".join(b"\x00" + values[i].astype(">u2").tobytes() for i in range(h))
    path.write_bytes(png_bytes(w, h, zlib.compress(raw), bit_depth=16, color_type=color_type))


class TestImages:
    """Odd image files: converted as documented, or named and skipped."""

    def test_truncated_jpeg_is_named_and_skipped(self, model_path, tmp_path):
        Image.fromarray(_rgb(40, 40)).save(tmp_path / "good.jpg")
        data = (tmp_path / "good.jpg").read_bytes()
        (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
        summary = predict_paths(tmp_path, model_path, tmp_path / "out", verbose=False)
        assert [(p.name, "truncated" in r.lower()) for p, r in summary.failed] == [("cut.jpg", True)]
        assert [p.name for p, _, _ in summary.written] == ["good.jpg"]

    def test_text_file_named_jpg_is_named_and_skipped(self, tmp_path):
        (tmp_path / "notes.jpg").write_text("hello")
        with pytest.raises(ImageReadError, match=r"notes\.jpg: not an image file"):
            read_image(tmp_path / "notes.jpg")

    def test_grayscale_png_becomes_three_equal_channels(self, model_path, tmp_path):
        gray = _rgb(30, 36)[..., 0]
        Image.fromarray(gray).save(tmp_path / "g.png")
        rgb = read_image(tmp_path / "g.png")
        assert rgb.shape == (30, 36, 3)
        for c in range(3):
            np.testing.assert_array_equal(rgb[..., c], gray)
        assert predict_paths(tmp_path / "g.png", model_path, tmp_path / "out",
                             verbose=False).ok
        assert _labels_of(tmp_path / "out", "g").shape == (30, 36)

    def test_rgba_png_alpha_is_ignored(self, predictor, model_path, tmp_path):
        rgb = _rgb(32, 32)
        alpha = np.zeros((32, 32), np.uint8)          # fully transparent
        Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "a.png")
        np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
        predict_paths(tmp_path / "a.png", model_path, tmp_path / "out", verbose=False)
        np.testing.assert_array_equal(_labels_of(tmp_path / "out", "a"),
                                      predict_image(predictor, rgb))

    def test_16bit_grayscale_png_is_scaled_not_clipped(self, model_path, tmp_path):
        values = (np.arange(20 * 24).reshape(20, 24) * 136).astype(np.uint16)  # 0..65144
        _write_png16(tmp_path / "g16.png", values)
        rgb = read_image(tmp_path / "g16.png")
        np.testing.assert_array_equal(rgb[..., 0], np.rint(values / 257.0).astype(np.uint8))
        assert len(np.unique(rgb)) > 200           # PIL's convert("RGB") would give 0/255
        assert predict_paths(tmp_path / "g16.png", model_path, tmp_path / "out",
                             verbose=False).ok

    def test_16bit_rgb_png_keeps_its_colours(self, tmp_path):
        values = np.zeros((8, 8, 3), np.uint16)
        values[..., 0], values[..., 1], values[..., 2] = 65535, 32896, 2570
        _write_png16(tmp_path / "c16.png", values)
        assert read_image(tmp_path / "c16.png")[0, 0].tolist() == [255, 128, 10]

    def test_cmyk_jpeg_reads_back_as_its_rgb(self, model_path, tmp_path):
        rgb = np.zeros((32, 32, 3), np.uint8)
        rgb[:16] = (200, 30, 40)
        rgb[16:] = (20, 180, 90)
        Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
        with Image.open(tmp_path / "cmyk.jpg") as im:
            assert im.mode == "CMYK"
        back = read_image(tmp_path / "cmyk.jpg").astype(int)
        assert np.abs(back - rgb).max() <= 8
        assert predict_paths(tmp_path / "cmyk.jpg", model_path, tmp_path / "out",
                             verbose=False).ok

    def test_one_pixel_image(self, predictor, model_path, tmp_path):
        Image.fromarray(np.array([[[10, 200, 30]]], np.uint8)).save(tmp_path / "dot.png")
        assert predict_paths(tmp_path / "dot.png", model_path, tmp_path / "out",
                             verbose=False).ok
        labels = _labels_of(tmp_path / "out", "dot")
        assert labels.shape == (1, 1)
        expected = np.argmax(predictor.scores(np.array([[[10, 200, 30]]], np.uint8)), -1)
        np.testing.assert_array_equal(labels, expected)

    def test_10000x10000_jpeg_is_downscaled_for_inference(self, model_path, tmp_path):
        # Documented: inference at most DEFAULT_MAX_SIDE on the long side, labels
        # written back at full size by nearest neighbour, overlay at inference size.
        big = Image.new("RGB", (10000, 10000), (90, 140, 200))
        big.paste((250, 250, 20), (0, 0, 5000, 10000))
        big.save(tmp_path / "huge.jpg", quality=70)
        del big
        summary = predict_paths(tmp_path / "huge.jpg", model_path, tmp_path / "out",
                                verbose=False)
        assert summary.ok
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(tmp_path / "out" / "labels" / "huge.png") as im:
                assert im.size == (10000, 10000) and im.mode == "P"
                labels = np.asarray(im)
        assert set(np.unique(labels[::50, ::50])) <= set(range(NUM_CLASSES))
        with Image.open(tmp_path / "out" / "overlays" / "huge.jpg") as im:
            assert max(im.size) == predict.DEFAULT_MAX_SIDE

    def test_image_above_max_pixels_is_refused_by_name(self, model_path, tmp_path):
        Image.fromarray(_rgb(50, 60)).save(tmp_path / "big.png")
        Image.fromarray(_rgb(10, 10)).save(tmp_path / "ok.png")
        summary = predict_paths(tmp_path, model_path, tmp_path / "out", max_pixels=1000,
                                verbose=False)
        (path, reason), = summary.failed
        assert path.name == "big.png"
        assert "60x50 = 3000 pixels" in reason and "max_pixels=1000" in reason
        assert [p.name for p, _, _ in summary.written] == ["ok.png"]

    def test_out_of_memory_on_one_image_is_reported_and_the_rest_processed(
            self, model_path, tmp_path, monkeypatch):
        import tensorflow as tf

        Image.fromarray(_rgb(64, 64)).save(tmp_path / "big.png")
        Image.fromarray(_rgb(16, 16)).save(tmp_path / "small.png")
        real = predict.predict_image

        def oom_on_big(predictor, image, crf=None):
            if image.shape[0] == 64:   # stands in for an allocation TensorFlow refuses
                raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating")
            return real(predictor, image, crf=crf)

        monkeypatch.setattr(predict.predictor, "predict_image", oom_on_big)
        summary = predict_paths(tmp_path, model_path, tmp_path / "out", verbose=False)
        (path, reason), = summary.failed
        assert path.name == "big.png" and "out of memory at 64x64" in reason
        assert "--max-side" in reason
        assert [p.name for p, _, _ in summary.written] == ["small.png"]

    def test_exif_rotated_jpeg_is_segmented_upright(self, predictor, model_path, tmp_path):
        stored = _rgb(24, 40)                     # stored landscape, EXIF says rotate 90
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif, quality=95)
        with Image.open(tmp_path / "rot.jpg") as im:
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        assert upright.shape == (40, 24, 3)
        predict_paths(tmp_path / "rot.jpg", model_path, tmp_path / "out", verbose=False)
        labels = _labels_of(tmp_path / "out", "rot")
        np.testing.assert_array_equal(labels, predict_image(predictor, upright))
        # --ignore-exif: the stored pixel order, as the training / evaluation readers.
        assert main([str(tmp_path / "rot.jpg"), "-m", str(model_path), "-q",
                     "-o", str(tmp_path / "raw"), "--ignore-exif"]) == 0
        raw = _labels_of(tmp_path / "raw", "rot")
        assert raw.shape == (24, 40)
        with Image.open(tmp_path / "rot.jpg") as im:
            stored_decoded = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(raw, predict_image(predictor, stored_decoded))


class TestPaths:
    """Missing / unusable paths: a clear error naming the path, before any work."""

    def test_output_dir_blocked_by_a_file(self, model_path, tmp_path, capsys):
        Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
        (tmp_path / "out").write_text("a file, not a folder")
        with pytest.raises(NotADirectoryError, match="out"):
            predict_paths(tmp_path / "x.png", model_path, tmp_path / "out", verbose=False)
        assert main([str(tmp_path / "x.png"), "-m", str(model_path),
                     "-o", str(tmp_path / "out")]) == 2
        assert "cannot be created" in capsys.readouterr().err

    @pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                        reason="root ignores directory permissions")
    def test_read_only_output_dir(self, model_path, tmp_path):
        Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
        try:
            with pytest.raises(PermissionError, match="not writable"):
                predict_paths(tmp_path / "x.png", model_path, out, verbose=False)
        finally:
            out.chmod(0o700)

    def test_missing_model_path(self, tmp_path, capsys):
        Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
        with pytest.raises(FileNotFoundError, match="Model not found: .*nope.keras"):
            predict_paths(tmp_path / "x.png", tmp_path / "nope.keras", tmp_path / "out")
        assert main([str(tmp_path / "x.png"), "-m", str(tmp_path / "nope.keras"),
                     "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "nope.keras" in err and "Traceback" not in err
        assert not (tmp_path / "out").exists()      # nothing created for a failed start

    def test_missing_input(self, model_path, tmp_path):
        with pytest.raises(FileNotFoundError, match="Input not found: .*ghost.jpg"):
            predict_paths([tmp_path / "ghost.jpg"], model_path, tmp_path / "out")

    def test_folder_without_images(self, model_path, tmp_path):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("x")
        with pytest.raises(ValueError, match="No image files .* in folder .*empty"):
            predict_paths(tmp_path / "empty", model_path, tmp_path / "out")

    def test_unknown_model_format(self, tmp_path):
        (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n")
        with pytest.raises(ValueError, match=r"Unknown model format .*model\.h5"):
            predict.load_predictor(tmp_path / "model.h5")

    def test_directory_that_is_not_a_saved_model(self, tmp_path):
        (tmp_path / "notsm").mkdir()
        with pytest.raises(ValueError, match="notsm is a directory but not a SavedModel"):
            predict.load_predictor(tmp_path / "notsm")


class TestConfigs:
    """Flags and checkpoints that do not fit."""

    def test_num_classes_mismatch(self, model_path, tmp_path, capsys):
        with pytest.raises(ValueError, match=f"outputs {NUM_CLASSES} classes but num_classes=21"):
            predict.load_predictor(model_path, num_classes=21)
        Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
        assert main([str(tmp_path / "x.png"), "-m", str(model_path), "-o", str(tmp_path / "o"),
                     "--num-classes", "21"]) == 2
        assert "num_classes=21" in capsys.readouterr().err

    def test_matching_num_classes_is_accepted(self, model_path):
        assert predict.load_predictor(model_path, num_classes=NUM_CLASSES).num_classes == 4

    def test_corrupt_keras_file(self, tmp_path):
        (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 not really a zip")
        with pytest.raises(ValueError, match=r"Could not load Keras model .*broken\.keras"):
            predict.load_predictor(tmp_path / "broken.keras")

    @pytest.mark.parametrize("kwargs, match", [
        (dict(alpha=2.0), "alpha=2.0"),
        (dict(max_side=0), "max_side=0"),
        (dict(max_pixels=-5), "max_pixels=-5"),
        (dict(num_classes=0), "num_classes=0"),
        (dict(crf="yes"), "crf='yes'"),
    ])
    def test_bad_arguments_are_named(self, model_path, tmp_path, kwargs, match):
        Image.fromarray(_rgb(8, 8)).save(tmp_path / "x.png")
        with pytest.raises(ValueError, match=match):
            predict_paths(tmp_path / "x.png", model_path, tmp_path / "out", verbose=False,
                          **kwargs)

    def test_crf_twice_is_refused(self, predictor):
        in_graph = predict.Predictor("savedmodel", predictor.path, predictor.num_classes, None,
                                     logits_fn=predictor.logits_fn,
                                     labels_fn=lambda image: image[..., 0] * 0, has_crf=True)
        with pytest.raises(ValueError, match="already runs the dense CRF"):
            predict_image(in_graph, _rgb(8, 8), crf=lambda images, logits: logits)


class TestNumbers:
    def test_nan_weights_are_an_error_not_all_background(self, tmp_path):
        import keras

        from deeplab_keras.models import build_model

        model = build_model("vgg16_largefov", num_classes=3, width_multiplier=0.125)
        fc8 = model.get_layer("fc8")
        kernel, bias = fc8.get_weights()
        fc8.set_weights([kernel, np.full_like(bias, np.nan)])
        model.save(tmp_path / "diverged.keras")
        assert keras.models.load_model(tmp_path / "diverged.keras") is not None
        Image.fromarray(_rgb(16, 16)).save(tmp_path / "x.png")
        with pytest.raises(ModelOutputError, match=r"diverged\.keras produced NaN/Inf"):
            predict_paths(tmp_path / "x.png", tmp_path / "diverged.keras", tmp_path / "out",
                          verbose=False)


class TestNothingLost:
    def test_failed_write_keeps_the_previous_output(self, model_path, tmp_path, monkeypatch):
        (tmp_path / "in").mkdir()
        Image.fromarray(_rgb(16, 16)).save(tmp_path / "in" / "x.png")
        out = tmp_path / "out"
        assert predict_paths(tmp_path / "in", model_path, out, verbose=False).ok
        before = (out / "labels" / "x.png").read_bytes()

        real_save = Image.Image.save

        def half_then_fail(self, fp, *args, **kwargs):
            real_save(self, fp, *args, **kwargs)
            with open(fp, "r+b") as f:          # leave a partial file, then "crash"
                f.truncate(10)
            raise OSError("No space left on device")

        monkeypatch.setattr(Image.Image, "save", half_then_fail)
        summary = predict_paths(tmp_path / "in", model_path, out, verbose=False)
        monkeypatch.undo()
        (path, reason), = summary.failed
        assert path.name == "x.png" and "No space left" in reason
        assert (out / "labels" / "x.png").read_bytes() == before
        assert sorted(p.name for p in (out / "labels").iterdir()) == ["x.png"]

    def test_kill_during_writes_never_leaves_a_partial_label_png(self, tmp_path):
        # A separate process rewrites a large label PNG in a loop; SIGKILL it at
        # an arbitrary moment. The final name must always hold a complete PNG.
        target = tmp_path / "labels.png"
        script = textwrap.dedent(f"""
            import numpy as np
            from deeplab_keras.viz import save_label_png
            labels = np.random.default_rng(0).integers(0, 21, (1500, 1500)).astype(np.uint8)
            save_label_png(labels, {str(target)!r})
            print("ready", flush=True)
            while True:
                save_label_png(labels, {str(target)!r})
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.7)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        with Image.open(target) as im:
            im.load()                                   # raises on a truncated file
            assert im.size == (1500, 1500) and im.mode == "P"

    def test_many_files_with_failures_still_finish(self, model_path, tmp_path):
        for i in range(6):
            Image.fromarray(_rgb(12, 12, seed=i)).save(tmp_path / f"im{i}.png")
        (tmp_path / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        summary = predict_paths(tmp_path, model_path, tmp_path / "out", verbose=False)
        assert [p.name for p, _ in summary.failed] == ["im2.png"]
        assert len(summary.written) == 5
        assert "1 failed" in str(summary) and "im2.png" in str(summary)
