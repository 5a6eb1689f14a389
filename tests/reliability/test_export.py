"""Reliability of the exporters and of the serving signature (issue 8).

Policy under test:
- The bytes signature gives the right labels for every decodable image (PNG,
  JPEG, GIF, BMP; grayscale, RGBA, 16-bit, 1x1) and a clear
  InvalidArgumentError (HTTP 400 in TF Serving) for anything else, after which
  the same loaded model keeps serving.
- Images above `max_image_pixels` are refused from the PNG / JPEG header, before
  the pixels are decoded.
- Exports never leave a half-written version directory or file: versions are
  written to a hidden temporary directory and renamed; existing versions and
  files are never replaced without overwrite=True.
"""

import inspect
import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_keras.app import export_cli as cli
from deeplab_keras.export.saved_model import existing_versions, export_saved_model
from deeplab_keras.export.serving import ServingModule
from deeplab_keras.export.tflite import convert_tflite, export_tflite
from deeplab_keras.models import build_model
from tests.helpers import png_bytes

NUM_CLASSES = 6
PIXEL_LIMIT = 96 * 96


def tiny_model():
    """A minimal stand-in with DeepLab's interface (logits at ceil(H/8), a
    dilated conv); for the path tests, whose subject is not the network."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.AveragePooling2D(8, strides=8, padding="same")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu")(x)
    outputs = keras.layers.Conv2D(NUM_CLASSES, 1)(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def vgg():
    keras.utils.set_random_seed(1)
    return build_model("vgg16_largefov", num_classes=NUM_CLASSES, width_multiplier=0.125)


@pytest.fixture(scope="module")
def served(vgg, tmp_path_factory):
    """The VGG model exported once with a small pixel limit and loaded back."""
    path = export_saved_model(vgg, tmp_path_factory.mktemp("sm") / "vgg",
                              max_image_pixels=PIXEL_LIMIT)
    return tf.saved_model.load(str(path))


def _encode(array, fmt="PNG", mode=None):
    buf = io.BytesIO()
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(buf, format=fmt)
    return buf.getvalue()


def _rgb(h=37, w=53, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _serve(served, *datas):
    out = served.signatures["serving_default"](image_bytes=tf.constant(list(datas)))
    return {k: v.numpy() for k, v in out.items()}


def _labels_of_rgb(served, rgb):
    images = tf.constant(np.asarray(rgb, np.float32)[None])
    return served.signatures["serving_images"](images=images)["labels"].numpy()[0]


class TestImages:
    def test_bytes_that_are_not_an_image_give_a_clear_error(self, served):
        with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
            _serve(served, b"this is not an image")

    def test_empty_bytes_give_a_clear_error(self, served):
        with pytest.raises(tf.errors.InvalidArgumentError, match="empty|Unknown image"):
            _serve(served, b"")

    def test_truncated_png_gives_a_clear_error(self, served):
        data = _encode(_rgb())
        with pytest.raises(tf.errors.InvalidArgumentError, match="PNG"):
            _serve(served, data[: len(data) // 2])

    def test_process_keeps_serving_after_a_bad_request(self, served):
        good = _encode(_rgb())
        with pytest.raises(tf.errors.InvalidArgumentError):
            _serve(served, good, b"garbage")  # one bad image fails its whole batch
        out = _serve(served, good)
        np.testing.assert_array_equal(out["labels"][0], _labels_of_rgb(served, _rgb()))

    def test_grayscale_png_is_served_as_rgb(self, served):
        gray = _rgb()[..., 0]
        out = _serve(served, _encode(gray, mode="L"))
        np.testing.assert_array_equal(out["labels"][0],
                                      _labels_of_rgb(served, np.repeat(gray[..., None], 3, -1)))

    def test_rgba_png_drops_the_alpha_channel(self, served):
        rgba = np.concatenate([_rgb(), np.full((37, 53, 1), 7, np.uint8)], -1)
        out = _serve(served, _encode(rgba, mode="RGBA"))
        np.testing.assert_array_equal(out["labels"][0], _labels_of_rgb(served, rgba[..., :3]))

    def test_16_bit_png_is_reduced_to_8_bits(self, served):
        gray16 = np.random.default_rng(2).integers(0, 65536, (21, 30)).astype(np.uint16)
        out = _serve(served, _encode(gray16))
        expected = np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, -1)
        np.testing.assert_array_equal(out["labels"][0], _labels_of_rgb(served, expected))

    def test_one_pixel_image_gives_a_one_pixel_label_map(self, served):
        out = _serve(served, _encode(_rgb(1, 1)))
        assert out["labels"].shape == (1, 1, 1)
        assert (out["height"][0], out["width"][0]) == (1, 1)
        assert 0 <= out["labels"][0, 0, 0] < NUM_CLASSES
        np.testing.assert_array_equal(out["labels"][0], _labels_of_rgb(served, _rgb(1, 1)))

    @pytest.mark.parametrize("fmt", ["GIF", "BMP"])
    def test_gif_and_bmp_are_accepted(self, served, fmt):
        rgb = _rgb(20, 24)
        data = _encode(rgb, fmt)
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        out = _serve(served, data)
        np.testing.assert_array_equal(out["labels"][0], _labels_of_rgb(served, decoded))

    @pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
    def test_image_above_the_pixel_limit_is_refused(self, served, fmt):
        with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_pixels=9216"):
            _serve(served, _encode(_rgb(97, 96), fmt))
        out = _serve(served, _encode(_rgb(96, 96), fmt))  # exactly at the limit: served
        assert out["labels"].shape == (1, 96, 96)

    def test_decompression_bomb_png_is_refused_from_its_header(self, vgg):
        """A 30000 x 30000 PNG of ~1 MB would decode to 2.7 GB: refused unread."""
        module = ServingModule(vgg, max_image_pixels=PIXEL_LIMIT)
        import zlib

        row = b"\x00" + b"\x00" * (30000 * 3)
        raw = zlib.compress(row * 8, 9)  # a few rows are enough: the header is what counts
        png = png_bytes(30000, 30000, raw, color_type=2)
        with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
            module.serve_bytes(tf.constant([png]))

    def test_float_signature_rejects_a_wrong_channel_count(self, served):
        for name in ("serving_images", "serving_logits"):
            with pytest.raises(tf.errors.InvalidArgumentError, match="3 channels"):
                served.signatures[name](images=tf.zeros([1, 8, 8, 4]))


class TestPaths:
    def test_existing_version_is_refused_and_left_untouched(self, tmp_path):
        model = tiny_model()
        first = export_saved_model(model, tmp_path / "m", version=3)
        before = (first / "saved_model.pb").read_bytes()
        with pytest.raises(FileExistsError, match="version 3 already exists"):
            export_saved_model(model, tmp_path / "m", version=3)
        assert (first / "saved_model.pb").read_bytes() == before
        assert existing_versions(tmp_path / "m") == [3]

    def test_version_none_takes_the_next_number(self, tmp_path):
        model = tiny_model()
        (tmp_path / "m" / "7").mkdir(parents=True)
        (tmp_path / "m" / "notes").mkdir()
        assert export_saved_model(model, tmp_path / "m").name == "8"

    def test_overwrite_replaces_an_existing_version(self, tmp_path):
        model = tiny_model()
        export_saved_model(model, tmp_path / "m", version=1)
        path = export_saved_model(model, tmp_path / "m", version=1, overwrite=True,
                                  include_probabilities=True)
        loaded = tf.saved_model.load(str(path))
        out = loaded.signatures["serving_default"](image_bytes=tf.constant([_encode(_rgb())]))
        assert "probabilities" in out
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]

    def test_unwritable_output_dir_raises_permission_error(self, tmp_path):
        if os.geteuid() == 0:  # root ignores mode bits: use a read-only filesystem
            target = Path("/sys/deeplab_export_test/m")
        else:
            locked = tmp_path / "locked"
            locked.mkdir()
            locked.chmod(0o500)
            target = locked / "m"
        with pytest.raises(PermissionError, match="deeplab_export_test|locked"):
            export_saved_model(tiny_model(), target)
        with pytest.raises(PermissionError):
            export_tflite(tiny_model(), target / "x.tflite", size=16)

    def test_export_dir_that_is_a_file_raises(self, tmp_path):
        (tmp_path / "file").write_text("x")
        with pytest.raises(NotADirectoryError, match="file"):
            export_saved_model(tiny_model(), tmp_path / "file")

    def test_existing_tflite_file_is_refused(self, tmp_path):
        (tmp_path / "m.tflite").write_bytes(b"old")
        with pytest.raises(FileExistsError, match="overwrite"):
            export_tflite(tiny_model(), tmp_path / "m.tflite", size=16)
        assert (tmp_path / "m.tflite").read_bytes() == b"old"

    def test_cli_missing_checkpoint_exits_2_with_the_path(self, tmp_path, capsys):
        assert cli.main([str(tmp_path / "nope.keras"), "--output-dir", str(tmp_path)]) == 2
        assert "nope.keras" in capsys.readouterr().err


class TestConfigs:
    @pytest.mark.parametrize("version", [-1, "1", 1.5, True])
    def test_bad_version_is_rejected(self, tmp_path, version):
        with pytest.raises(ValueError, match="version"):
            export_saved_model(tiny_model(), tmp_path / "m", version=version)

    def test_bad_crf_argument_is_rejected(self, tmp_path):
        with pytest.raises(ValueError, match="crf"):
            export_saved_model(tiny_model(), tmp_path / "m", crf="yes")

    def test_bad_max_image_pixels_is_rejected(self, tmp_path):
        with pytest.raises(ValueError, match="max_image_pixels=0"):
            export_saved_model(tiny_model(), tmp_path / "m", max_image_pixels=0)
        assert not (tmp_path / "m" / "1").exists()

    def test_not_a_keras_model_is_rejected(self, tmp_path):
        with pytest.raises(ValueError, match="keras.Model"):
            export_saved_model(lambda x: x, tmp_path / "m")

    def test_bad_quantization_is_rejected(self):
        with pytest.raises(ValueError, match="quantization='int4'"):
            convert_tflite(tiny_model(), size=16, quantization="int4")

    @pytest.mark.parametrize("size", [0, (16, -1), "big", (16,)])
    def test_bad_size_is_rejected(self, size):
        with pytest.raises(ValueError, match="size"):
            convert_tflite(tiny_model(), size=size)

    def test_representative_data_of_the_wrong_size_is_rejected(self):
        with pytest.raises(ValueError, match=r"\[1, 16, 16, 3\]"):
            convert_tflite(tiny_model(), size=16, quantization="int8",
                           representative_data=[np.zeros((1, 32, 32, 3), np.float32)])

    def test_cli_unknown_model_name_exits_2_listing_the_choices(self, tmp_path, capsys):
        assert cli.main(["vgg17", "--output-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "vgg17" in err and "vgg16_largefov" in err

    def test_cli_unknown_format_exits_2(self, tmp_path, capsys):
        assert cli.main(["vgg16_largefov", "--formats", "tflite_int4",
                         "--output-dir", str(tmp_path)]) == 2
        assert "tflite_int4" in capsys.readouterr().err


class TestNothingLost:
    def test_kill_mid_export_leaves_no_version_dir(self, tmp_path):
        """SIGKILL after the SavedModel is fully written but before the rename:
        no numeric directory appears (TF Serving would load it), only a hidden
        .tmp- directory, and the next export cleans it up and takes version 1."""
        script = textwrap.dedent(f"""
            import time, keras
            from deeplab_keras.export import export_saved_model
            NUM_CLASSES = {NUM_CLASSES}
        """) + inspect.getsource(tiny_model) + textwrap.dedent(f"""
            cls = type(keras.export.ExportArchive())
            original = cls.write_out
            def slow_write_out(self, *args, **kwargs):
                original(self, *args, **kwargs)
                print("WRITTEN", flush=True)
                time.sleep(600)
            cls.write_out = slow_write_out
            export_saved_model(tiny_model(), {str(tmp_path / "m")!r})
        """)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            line = ""
            while line.strip() != "WRITTEN":
                line = proc.stdout.readline()
                assert line, "the export process ended before writing"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        entries = list((tmp_path / "m").iterdir())
        assert existing_versions(tmp_path / "m") == []
        assert len(entries) == 1 and entries[0].name.startswith(".tmp-")
        assert (entries[0] / "saved_model.pb").is_file()  # it was killed after writing
        path = export_saved_model(tiny_model(), tmp_path / "m")
        assert path.name == "1"
        assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]

    def test_failed_overwrite_keeps_the_old_version(self, tmp_path, monkeypatch):
        model = tiny_model()
        old = export_saved_model(model, tmp_path / "m", version=1)
        before = (old / "saved_model.pb").read_bytes()
        cls = type(keras.export.ExportArchive())

        def failing_write_out(self, filepath, *args, **kwargs):
            Path(filepath).mkdir(parents=True)
            (Path(filepath) / "saved_model.pb").write_bytes(b"partial")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(cls, "write_out", failing_write_out)
        with pytest.raises(OSError, match="No space left"):
            export_saved_model(model, tmp_path / "m", version=1, overwrite=True)
        assert (old / "saved_model.pb").read_bytes() == before
        assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]

    def test_stale_temporary_dir_of_a_dead_export_is_removed(self, tmp_path):
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        stale = tmp_path / "m" / f".tmp-1-{dead.pid}-deadbeef"
        stale.mkdir(parents=True)
        (stale / "saved_model.pb").write_bytes(b"partial")
        mine = tmp_path / "m" / f".tmp-1-{os.getpid()}-cafecafe"  # a live export's: kept
        mine.mkdir()
        export_saved_model(tiny_model(), tmp_path / "m")
        assert not stale.exists() and mine.exists()

    def test_failed_tflite_conversion_keeps_the_old_file(self, tmp_path):
        (tmp_path / "m.tflite").write_bytes(b"old model")
        with pytest.raises(ValueError):
            export_tflite(tiny_model(), tmp_path / "m.tflite", size=16, quantization="int8",
                          representative_data=[np.zeros((1, 8, 8, 3), np.float32)],
                          overwrite=True)
        assert (tmp_path / "m.tflite").read_bytes() == b"old model"
        assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
