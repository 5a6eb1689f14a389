"""deeplab_keras.viz: colour maps, overlays, side-by-side figures, training curves."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deeplab_keras import viz
from deeplab_keras.palette import VOC_PALETTE


def _labels(h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 21, (h, w)).astype(np.uint8)
    labels[:4, :4] = 0
    labels[-2:, -2:] = 255
    return labels


def _image(h=24, w=32, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


class TestColours:
    def test_colorize_uses_voc_colours(self):
        labels = np.array([[0, 1], [15, 255]])
        rgb = viz.colorize(labels)
        assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
        assert rgb[0, 0].tolist() == [0, 0, 0]
        assert rgb[0, 1].tolist() == [128, 0, 0]          # aeroplane
        assert rgb[1, 0].tolist() == [192, 128, 128]      # person
        assert rgb[1, 1].tolist() == [224, 224, 192]      # ignore / boundary

    def test_overlay_blends_foreground_and_keeps_background(self):
        image, labels = _image(), _labels()
        out = viz.overlay(image, labels, alpha=0.25)
        bg = labels == 0
        np.testing.assert_array_equal(out[bg], image[bg])
        expected = 0.75 * image[~bg].astype(np.float64) + 0.25 * VOC_PALETTE[labels[~bg]]
        assert np.abs(out[~bg].astype(np.float64) - expected).max() <= 1.0

    def test_overlay_alpha_one_is_the_colour_map(self):
        image, labels = _image(), _labels()
        out = viz.overlay(image, labels, alpha=1.0, transparent_labels=())
        np.testing.assert_array_equal(out, viz.colorize(labels))

    def test_overlay_accepts_float_and_grayscale_images(self):
        labels = _labels()
        gray = np.full(labels.shape, 100, np.uint8)
        out = viz.overlay(gray, labels)
        assert out.shape == labels.shape + (3,)
        np.testing.assert_array_equal(out[labels == 0], 100)
        floats = np.full(labels.shape + (3,), 300.0)   # overshoot is clipped, not wrapped
        assert viz.overlay(floats, labels)[labels == 0].min() == 255

    @pytest.mark.parametrize("kwargs, match", [
        (dict(labels=np.zeros((5, 5), np.uint8)), "same height and width"),
        (dict(labels=np.zeros((24, 32), np.float32)), "dtype=float32"),
        (dict(labels=np.full((24, 32), 300)), "max=300"),
        (dict(labels=np.zeros((24, 32, 2), np.uint8)), r"shape=\(24, 32, 2\)"),
        (dict(alpha=1.5), "alpha=1.5"),
    ])
    def test_overlay_rejects_bad_arguments(self, kwargs, match):
        args = dict(image=_image(), labels=_labels(), alpha=0.5)
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            viz.overlay(args["image"], args["labels"], alpha=args["alpha"])


class TestLabelPng:
    def test_round_trip_is_a_voc_palette_png(self, tmp_path):
        labels = _labels()
        path = viz.save_label_png(labels, tmp_path / "a.png")
        with Image.open(path) as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.asarray(im), labels)
            palette = np.asarray(im.getpalette(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(palette[:256], VOC_PALETTE)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]   # no temporaries

    def test_missing_folder_is_named(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope"):
            viz.save_label_png(_labels(), tmp_path / "nope" / "a.png")


class TestFigures:
    def test_side_by_side_layout_and_file(self, tmp_path):
        images = np.stack([_image(seed=1), _image(seed=2)])
        preds = np.stack([_labels(seed=3), _labels(seed=4)])
        fig = viz.side_by_side(images, preds, preds, preds, titles=["a", "b"])
        axes = fig.get_axes()
        assert len(axes) == 2 * 4
        assert [ax.get_title() for ax in axes[:4]] == [
            "image", "prediction", "with CRF", "ground truth"]
        # The second row's prediction panel shows exactly the coloured label map.
        np.testing.assert_array_equal(axes[5].get_images()[0].get_array(),
                                      VOC_PALETTE[preds[1]])
        legend_names = {t.get_text() for t in fig.legends[0].get_texts()}
        assert "ignore" in legend_names and "background" in legend_names
        assert len(legend_names) == len(np.unique(preds))
        path = viz.save_figure(fig, tmp_path / "fig.png")
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > im.size[1] > 0

    def test_optional_columns_and_overlay_style(self):
        fig = viz.side_by_side(_image(), _labels(), style="overlay", legend=False)
        axes = fig.get_axes()
        assert [ax.get_title() for ax in axes] == ["image", "prediction"]
        np.testing.assert_array_equal(axes[1].get_images()[0].get_array(),
                                      viz.overlay(_image(), _labels(), alpha=0.6))
        assert not fig.legends

    def test_label_grid_any_columns_and_images_of_different_sizes(self):
        images = [_image(24, 32, seed=1), _image(20, 30, seed=2)]
        maps = [_labels(24, 32, seed=3), _labels(20, 30, seed=4)]
        fig = viz.label_grid(images, {"Keras": maps, "TFLite": maps, "ONNX": maps},
                             legend=False)
        axes = fig.get_axes()
        assert [ax.get_title() for ax in axes[:4]] == ["image", "Keras", "TFLite", "ONNX"]
        np.testing.assert_array_equal(axes[7].get_images()[0].get_array(),
                                      VOC_PALETTE[maps[1]])
        with pytest.raises(ValueError, match="must be a dict"):
            viz.label_grid(images, maps)

    def test_side_by_side_ground_truth_only_shows_a_data_batch(self):
        fig = viz.side_by_side(_image(), ground_truths=_labels(), class_names=["bg"])
        assert [ax.get_title() for ax in fig.get_axes()] == ["image", "ground truth"]
        names = [t.get_text() for t in fig.legends[0].get_texts()]
        assert names[0] == "bg" and names[1] == "class 1" and names[-1] == "ignore"
        with pytest.raises(ValueError, match="at least one"):
            viz.side_by_side(_image())

    def test_side_by_side_rejects_mismatches(self):
        with pytest.raises(ValueError, match="does not match image shape"):
            viz.side_by_side(_image(), _labels(h=10))
        with pytest.raises(ValueError, match="2 label maps"):
            viz.side_by_side(_image(), np.stack([_labels(), _labels()]))
        with pytest.raises(ValueError, match="style='heatmap'"):
            viz.side_by_side(_image(), _labels(), style="heatmap")


class TestTrainingCurves:
    def test_curves_follow_the_keras_csv_log(self, tmp_path):
        import keras

        log = tmp_path / "log.csv"
        x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        y = (x[:, 0] > 0).astype("int32")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.MeanIoU(2, name="mean_iou",
                                                     sparse_y_pred=False)])
        model.fit(x, y, validation_split=0.25, epochs=3, verbose=0,
                  callbacks=[keras.callbacks.CSVLogger(str(log))])
        columns = viz.read_training_log(log)
        fig = viz.plot_training_curves(log, path=tmp_path / "curves.png")
        loss_ax, iou_ax = fig.get_axes()
        plotted = {line.get_label(): line for line in loss_ax.lines + iou_ax.lines}
        assert set(plotted) == {"loss", "val_loss", "mean_iou", "val_mean_iou"}
        for name, line in plotted.items():
            np.testing.assert_allclose(line.get_ydata(), columns[name])
            np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])   # epochs, 1-based
        assert (tmp_path / "curves.png").stat().st_size > 0

    def test_bad_logs_are_named(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="missing.csv"):
            viz.plot_training_curves(tmp_path / "missing.csv")
        empty = tmp_path / "empty.csv"
        empty.write_text("epoch,loss\n")
        with pytest.raises(ValueError, match="no data rows"):
            viz.plot_training_curves(empty)
        no_loss = tmp_path / "no_loss.csv"
        no_loss.write_text("epoch,accuracy\n0,0.5\n")
        with pytest.raises(ValueError, match=r"no loss column.*accuracy"):
            viz.plot_training_curves(no_loss)


def test_import_is_light():
    """Importing viz and predict adds no plotting, export or evaluation code to what
    `import deeplab_keras` loads (TensorFlow and Keras: it registers the serializable
    classes, Keras's convention), so `deeplab-predict` starts without them."""
    code = ("import sys, deeplab_keras; before = set(sys.modules); "
            "import deeplab_keras.viz, deeplab_keras.predict; "
            "new = set(sys.modules) - before; "
            "heavy = sorted(m for m in new if m == 'matplotlib.pyplot' "
            "or m.split('.')[0] in ('tf2onnx', 'onnxruntime', 'ai_edge_litert') "
            "or m.startswith(('deeplab_keras.export', 'deeplab_keras.evaluation'))); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
