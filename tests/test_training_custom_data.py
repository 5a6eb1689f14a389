"""Training, evaluation and prediction on your own data (deeplab_keras.data.custom):
class count from the dataset, class weights in the loss with 255 ignored exactly,
the class-frequency report in the run directory, class names in the results."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_keras.app import train_cli as cli
from deeplab_keras.training.losses import segmentation_cross_entropy

H, W = 40, 48
CAMVID = [("Sky", (128, 128, 128)), ("Road", (128, 64, 128)), ("Car", (64, 0, 128)),
          ("Void", (0, 0, 0))]


def _scene(seed):
    """(image uint8 [H, W, 3], class-row ids [H, W]): the class shows in the image's
    colour (learnable in a few steps); a Void stripe at the bottom."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((H, W), np.int64)
    rows[H // 3:] = 1
    y, x = rng.integers(4, H // 2), rng.integers(0, W // 2)
    rows[y:y + 14, x:x + 18] = 2
    rows[-3:] = 3
    palette = np.array([(70, 130, 230), (90, 90, 90), (230, 40, 40), (0, 0, 0)])
    image = np.clip(palette[rows] + rng.normal(0, 12, (H, W, 3)), 0, 255).astype(np.uint8)
    return image, rows


def _camvid(root, n_train=6, n_val=2):
    root.mkdir(parents=True, exist_ok=True)
    (root / "class_dict.csv").write_text(
        "name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in CAMVID))
    colours = np.array([c for _, c in CAMVID], np.uint8)
    k = 0
    for split, n in (("train", n_train), ("val", n_val)):
        for _ in range(n):
            image, rows = _scene(k)
            (root / split).mkdir(exist_ok=True)
            (root / f"{split}_labels").mkdir(exist_ok=True)
            Image.fromarray(image).save(root / split / f"Seq05VD_f{k:05d}.png")
            Image.fromarray(colours[rows]).save(root / f"{split}_labels" / f"Seq05VD_f{k:05d}_L.png")
            k += 1
    return root


def test_class_weights_in_the_loss_255_ignored_exactly():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 8, 8)).astype(np.int32)
    labels[:, :2] = 255
    logits = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype(np.float32))
    w = np.array([0.5, 2.0, 1.5])
    loss = segmentation_cross_entropy(labels, logits, class_weights=w)
    logp = tf.nn.log_softmax(logits).numpy()
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    want = (w[safe] * nll)[valid].sum() / valid.sum()
    np.testing.assert_allclose(float(loss), want, rtol=1e-6)
    # Ignored pixels: no contribution, no gradient, whatever their logits.
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = segmentation_cross_entropy(labels, logits, class_weights=w)
    grad = tape.gradient(value, logits).numpy()
    assert np.all(grad[:, :2] == 0) and np.abs(grad[:, 2:]).sum() > 0
    moved = logits.numpy().copy()
    moved[:, :2] += 100.0
    np.testing.assert_allclose(float(segmentation_cross_entropy(labels, moved, class_weights=w)),
                               want, rtol=1e-6)
    # Unit weights are the unweighted loss.
    np.testing.assert_allclose(
        float(segmentation_cross_entropy(labels, logits, class_weights=[1, 1, 1])),
        float(segmentation_cross_entropy(labels, logits)), rtol=1e-6)
    with pytest.raises(ValueError, match="3 finite numbers >= 0"):
        segmentation_cross_entropy(labels, logits, class_weights=[1, 2])


def test_cli_errors_num_classes_and_class_weights(tmp_path, capsys):
    data = _camvid(tmp_path / "camvid", n_train=2, n_val=1)
    base = ["--data-dir", str(data), "--output-dir", str(tmp_path / "run"), "--steps", "1"]
    # The builtin preset's own num_classes, given explicitly, is still checked.
    from deeplab_keras.data import builtin
    assert cli.main(base + ["--num-classes", str(builtin.NUM_CLASSES)]) == 2
    err = capsys.readouterr().err
    assert (f"--num-classes {builtin.NUM_CLASSES} does not match the dataset" in err
            and "has 3 classes (Sky, Road, Car)" in err)
    assert cli.main(base + ["--class-weights", "1,2"]) == 2
    assert ("class_weights must be 3 finite numbers >= 0 (one per class: Sky, Road, Car)"
            in capsys.readouterr().err)
    assert not (tmp_path / "run" / "config.json").exists()
    # A list of the dataset's length goes to the loss as it is.
    from deeplab_keras.training.trainer import check_data, resolve_data
    config = cli.resolve_config(cli.build_parser().parse_args(base + ["--class-weights",
                                                                       "1,2,0.5"]))
    config, _ = resolve_data(config)
    assert config.num_classes == 3
    assert check_data(config) == (1.0, 2.0, 0.5)
    assert cli.main(base + ["--class-weights", "median"]) == 2
    assert "inverse_frequency" in capsys.readouterr().err
    assert cli.main(["--output-dir", str(tmp_path / "r2"), "--steps", "1",
                     "--class-weights", "median_frequency", "--no-export", "--no-eval"]) == 2
    assert "class_weights='median_frequency' is computed from" in capsys.readouterr().err


def test_train_evaluate_predict_on_camvid_folder(tmp_path, capsys):
    """One short run: num_classes from class_dict.csv, median-frequency weights,
    the frequency table printed and saved, the loss falls, evaluation and
    prediction use the class names."""
    data = _camvid(tmp_path / "camvid")
    run = tmp_path / "run"
    rc = cli.main(["--data-dir", str(data), "--output-dir", str(run), "--steps", "40",
                   "--batch-size", "4", "--class-weights", "median_frequency", "--no-export",
                   "--set", "width_multiplier=0.0625", "--set", "crop_size=32",
                   "--set", "steps_per_epoch=10", "--set", "checkpoint_every=40",
                   "--set", "val_miou_images=0", "--image-summary-every", "20",
                   "--set", "image_summary_images=2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    from deeplab_keras.data import builtin
    assert f"num_classes {builtin.NUM_CLASSES} -> 3 from the dataset" in out
    assert "layout 'camvid', 3 classes" in out
    assert "ignored (label 255): value 255 (index masks), class 'Void'" in out
    assert "class frequencies of the train split" in out and "weight" in out
    config = json.loads((run / "config.json").read_text())
    assert config["num_classes"] == 3 and config["class_weights"] == "median_frequency"
    report = json.loads((run / "data_report.json").read_text())
    assert report["class_names"] == ["Sky", "Road", "Car"]
    assert report["ignored_classes"] == ["Void"]
    counts = [c["pixels"] for c in report["frequencies"]["classes"]]
    want = np.zeros(3, np.int64)
    for k in range(6):
        rows = _scene(k)[1]
        want += np.bincount(rows[rows < 3], minlength=3)
    assert counts == want.tolist()
    assert report["frequencies"]["ignored_pixels"] == 6 * 3 * W
    assert "Sky" in (run / "class_frequencies.txt").read_text()
    losses = [float(v) for v in
              [line.split(",")[1] for line in
               (run / "training_log.csv").read_text().splitlines()[1:]]]
    assert losses[-1] < 0.8 * losses[0], losses
    results = json.loads((run / "eval_results.json").read_text())
    assert list(results["per_class_iou"]) == ["Sky", "Road", "Car"]
    assert results["num_images"] == 2 and not results["failed"]

    from deeplab_keras.app import evaluate_cli as eval_cli
    assert eval_cli.main(["--run-dir", str(run)]) == 0
    table = capsys.readouterr().out
    assert "Sky" in table and "Car" in table
    assert list(json.loads((run / "eval_val.json").read_text())["per_class_iou"]) == [
        "Sky", "Road", "Car"]
    _check_image_summaries(run, data)
    figure = Image.open(run / "eval_val_confusion.png")
    assert figure.format == "PNG" and min(figure.size) > 100
    sidecar = json.loads((run / "classes.json").read_text())
    assert sidecar == {"class_names": ["Sky", "Road", "Car"],
                       "class_colors": ["#808080", "#804080", "#400080"]}

    from deeplab_keras.predict import main as predict_main
    assert predict_main([str(data / "val"), "-m", str(run / "model.keras"),
                         "-o", str(tmp_path / "pred"), "-q"]) == 0
    labels = sorted((tmp_path / "pred" / "labels").iterdir())
    assert len(labels) == 2
    png = Image.open(labels[0])
    assert set(np.unique(np.asarray(png))) <= {0, 1, 2}
    # Coloured with the dataset's own table (class_dict.csv), not VOC's.
    assert png.getpalette()[:9] == [v for _, c in CAMVID[:3] for v in c]
    legend = np.asarray(Image.open(tmp_path / "pred" / "legend.png").convert("RGB"))
    for _, colour in CAMVID[:3]:
        assert (legend == colour).all(-1).sum() > 100


def _check_image_summaries(run, data):
    """TensorBoard: 2 fixed val images at steps 20 and 40, each panel = image |
    prediction | ground truth in the class_dict.csv colours."""
    import io

    events = list((run / "logs" / "images").glob("events.out.tfevents.*"))
    assert len(events) == 1
    seen = {}
    for event in tf.compat.v1.train.summary_iterator(str(events[0])):
        for value in event.summary.value:
            seen.setdefault(value.tag, []).append(event.step)
            png = value.tensor.string_val[2]
            panel = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    names = sorted(p.stem for p in (data / "val").iterdir())
    assert seen == {f"val_images/{n}": [20, 40] for n in names}
    # The last panel read: the second val image at step 40.
    image, rows = _scene(7)
    colours = np.array([c for _, c in CAMVID[:3]] + [(0, 0, 0)] * 252 + [(224, 224, 192)],
                       np.uint8)
    assert panel.shape == (H, 3 * W, 3)
    np.testing.assert_array_equal(panel[:, :W], image)
    np.testing.assert_array_equal(panel[:, 2 * W:], colours[np.where(rows == 3, 255, rows)])


def _folders(root, n_train=6, n_val=2):
    """images/*.jpg + masks/*.png (index values, 255 = ignore) + classes.txt + lists."""
    names = []
    for k in range(n_train + n_val):
        image, rows = _scene(k)
        for d in ("images", "masks"):
            (root / d).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"pic{k}.jpg", quality=95)
        Image.fromarray(np.where(rows == 3, 255, rows).astype(np.uint8), "L").save(
            root / "masks" / f"pic{k}.png")
        names.append(f"pic{k}")
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    (root / "train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (root / "val.txt").write_text("\n".join(names[n_train:]) + "\n")
    return root


def _cvat(root, n_train=6, n_val=2):
    """CVAT 'Segmentation mask 1.1' with an 'ignore' class in labelmap.txt."""
    table = [("sky", (0, 0, 0)), ("road", (61, 245, 61)), ("car", (250, 50, 83)),
             ("ignore", (255, 255, 255))]
    root.mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\n"
        + "".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in table))
    colours = np.array([c for _, c in table], np.uint8)
    names = []
    for k in range(n_train + n_val):
        image, rows = _scene(k)
        for d in ("JPEGImages", "SegmentationClass"):
            (root / d).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / f"frame_{k:06d}.jpg", quality=95)
        Image.fromarray(colours[rows]).save(root / "SegmentationClass" / f"frame_{k:06d}.png")
        names.append(f"frame_{k:06d}")
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (sets / "val.txt").write_text("\n".join(names[n_train:]) + "\n")
    return root


@pytest.mark.parametrize("layout", ["folders", "voc_export"])
def test_short_run_learns_on_the_other_layouts(tmp_path, layout, capsys):
    """The two layouts the CamVid run above does not cover: num_classes from the
    table, the loss falls, evaluation reports the table's class names."""
    from deeplab_keras.evaluation import evaluate_split
    from deeplab_keras.training import apply_overrides, get_preset
    from deeplab_keras.training.trainer import resolve_data, train

    data = (_folders if layout == "folders" else _cvat)(tmp_path / "data")
    config = apply_overrides(get_preset("builtin"), dict(
        data_dir=str(data), output_dir=str(tmp_path / "run"), width_multiplier=0.0625,
        crop_size=32, batch_size=4, steps=30, steps_per_epoch=10, checkpoint_every=30,
        val_miou_images=0, export_dir=None, class_weights="inverse_frequency"))
    result = train(config, verbose=0)
    assert result.config.num_classes == 3
    losses = result.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["layout"] == layout and report["class_names"] == ["sky", "road", "car"]
    assert f"layout '{layout}', 3 classes" in capsys.readouterr().out
    _, data_dir = resolve_data(result.config)
    ev = evaluate_split(result.model, data_dir, "val", num_classes=3, verbose=False)
    assert ev.class_names == ["sky", "road", "car"] and ev.num_images == 2
    assert int(ev.confusion.sum()) == 2 * (H - 3) * W  # the 'ignore' / 255 rows excluded


def test_export_copies_the_class_sidecar(tmp_path):
    from deeplab_keras.app.export_cli import copy_class_sidecar
    from deeplab_keras.predict import find_class_sidecar

    run = tmp_path / "run"
    run.mkdir()
    (run / "classes.json").write_text('{"class_names": ["a", "b"], '
                                      '"class_colors": ["#000000", "#ff0000"]}')
    saved = tmp_path / "out" / "m" / "1"
    tfl = tmp_path / "out" / "m" / "tflite"
    saved.mkdir(parents=True)
    tfl.mkdir()
    written = {"saved_model": saved, "tflite_float32": tfl / "m_33x33_float32.tflite"}
    assert copy_class_sidecar(run / "model.keras", written) == [saved / "classes.json",
                                                                 tfl / "classes.json"]
    assert find_class_sidecar(tfl / "m_33x33_float32.tflite") == tfl / "classes.json"
    assert find_class_sidecar(saved) == saved / "classes.json"
    assert copy_class_sidecar("vgg16_largefov", written) == []
