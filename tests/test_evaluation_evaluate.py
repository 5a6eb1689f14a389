"""Full-resolution evaluation: the mIoU of known predictions, MSC / flip / CRF inference,
per-file failures, the CRF parameter search and the command line."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_keras.data import synthetic
from deeplab_keras.evaluation import metrics
from deeplab_keras.evaluation.crf_search import coarse_to_fine, search_crf
from deeplab_keras.evaluation.evaluate import Predictor, evaluate_examples, evaluate_split, format_table

NUM_CLASSES = synthetic.NUM_CLASSES


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    names = [f"img_{i}" for i in range(6)]
    synthetic.write_voc(root, synthetic.make_examples(names, seed=7, min_hw=(40, 48), max_hw=(56, 64)),
                        {"val": names})
    return root


def _constant_model(favourite=0):
    """Logits at stride 8 that always prefer class `favourite`."""
    inp = keras.Input((None, None, 3))
    x = keras.layers.AveragePooling2D(8, strides=8, padding="same")(inp)
    bias = np.zeros(NUM_CLASSES, np.float32)
    bias[favourite] = 5.0
    out = keras.layers.Conv2D(NUM_CLASSES, 1, kernel_initializer="zeros",
                              bias_initializer=keras.initializers.Constant(bias))(x)
    return keras.Model(inp, out)


def _colour_model():
    """A deterministic, non-constant, non-symmetric stride-8 'network' (random 1x1 conv)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(NUM_CLASSES, 3, strides=2, padding="same")(x)
    return keras.Model(inp, x)


def _labels(voc_dir, names):
    return [np.asarray(Image.open(voc_dir / "VOC2012" / "SegmentationClass" / f"{n}.png")) for n in names]


def test_miou_of_known_predictions(voc_dir):
    """A model that always says 'background': the confusion matrix is the label histogram."""
    result = evaluate_split(_constant_model(0), voc_dir, "val", num_classes=NUM_CLASSES, verbose=False)
    labels = _labels(voc_dir, [f"img_{i}" for i in range(6)])
    expected = metrics.ConfusionMatrix(NUM_CLASSES)
    for lab in labels:
        expected.update(lab, np.zeros_like(lab))
    np.testing.assert_array_equal(result.confusion, expected.matrix)
    assert result.miou == pytest.approx(expected.mean_iou())
    assert result.confusion.sum() == sum(int((lab != 255).sum()) for lab in labels)  # full resolution
    assert result.num_images == 6 and not result.failed


def test_msc_is_a_max_fusion_and_flip_an_average():
    model = _colour_model()
    image = np.random.default_rng(0).normal(size=(41, 57, 3)).astype(np.float32) * 40
    single = Predictor(model)(image).numpy()
    assert single.shape == (41, 57, NUM_CLASSES)
    msc = Predictor(model, scales=(1.0, 0.75, 0.5))(image).numpy()
    # Max over scales that include 1.0, then bilinear upsampling: never below scale 1 alone.
    assert np.all(msc >= single - 1e-4) and np.any(msc > single + 1e-3)
    flipped = Predictor(model)(image[:, ::-1]).numpy()[:, ::-1]
    both = Predictor(model, flip=True)(image).numpy()
    np.testing.assert_allclose(both, 0.5 * (single + flipped), rtol=1e-5, atol=1e-5)


def test_crf_inference_returns_probabilities(voc_dir):
    from deeplab_keras.crf import DenseCRF

    predictor = Predictor(_colour_model(), crf=DenseCRF(iterations=2))
    image = np.random.default_rng(1).normal(size=(33, 40, 3)).astype(np.float32) * 40
    probs = predictor(image).numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-4)
    result = evaluate_split(_colour_model(), voc_dir, "val", num_classes=NUM_CLASSES, limit=2,
                            crf=DenseCRF(iterations=2), verbose=False)
    assert result.num_images == 2 and result.settings["crf"]["iterations"] == 2


def test_crf_refinement_runs_the_fast_path():
    """The refinement is traced with the model's class count, so the CRF takes its
    sparse, class-chunked form and the depthwise spatial filter (not the transposed
    conv2d it needs when C is unknown)."""
    from deeplab_keras.crf import DenseCRF
    from tests.helpers import assert_runs_fast_crf, ops_run

    predictor = Predictor(_colour_model(), crf=DenseCRF(iterations=1))
    image = tf.constant(np.random.default_rng(2).normal(size=(24, 32, 3)).astype(np.float32) * 40)
    logits = predictor._full_logits(image)
    concrete = predictor._refine.get_concrete_function(image, logits)
    assert concrete.structured_outputs.shape[-1] == NUM_CLASSES
    assert_runs_fast_crf(ops_run(predictor._refine, image, logits))


def test_results_json_and_table(voc_dir, tmp_path):
    result = evaluate_split(_constant_model(0), voc_dir, "val", num_classes=NUM_CLASSES, limit=2,
                            class_names=list(synthetic.CLASS_NAMES), verbose=False)
    table = format_table(result)
    assert "background" in table and "mean IoU" in table and "2 images" in table
    result.to_json(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["num_images"] == 2 and saved["miou"] == pytest.approx(result.miou)
    assert set(saved["per_class_iou"]) == set(synthetic.CLASS_NAMES)
    assert np.array(saved["confusion_matrix"]).shape == (NUM_CLASSES, NUM_CLASSES)
    assert evaluate_examples(_constant_model(0), [], NUM_CLASSES, verbose=False).num_images == 0


def test_coarse_to_fine_finds_the_optimum_of_a_known_function():
    target = {"w1": 5.5, "sa": 80.0, "sb": 5.0}
    ranges = {"w1": (3.0, 6.0), "sa": (30.0, 100.0), "sb": (3.0, 6.0)}

    def score(params, stage):  # peak at `target`, normalised L1 distance
        return -sum(abs(params[k] - target[k]) / (ranges[k][1] - ranges[k][0]) for k in ranges)

    best, trials = coarse_to_fine(score, ranges, coarse_points=2, fine_rounds=1)
    # Coarse corners: best (6, 100, 6). Fine round, half spacing: (6, 65, 4.5) is closest.
    assert (best["w1"], best["sa"], best["sb"]) == (6.0, 65.0, 4.5)
    assert len(trials) == 8 + 7  # 2^3 corners, then the 2^3 neighbourhood minus the centre
    assert len({(t["w1"], t["sa"], t["sb"]) for t in trials}) == len(trials)
    assert best["miou"] == max(t["miou"] for t in trials)
    best2, _ = coarse_to_fine(score, ranges, coarse_points=2, fine_rounds=3)
    assert best2["miou"] >= best["miou"]


def test_search_crf_end_to_end(voc_dir, tmp_path):
    result = search_crf(_colour_model(), voc_dir, "val", num_classes=NUM_CLASSES, limit=1,
                        coarse_points=1, fine_rounds=0, iterations=2, verbose=False)
    assert result.num_images == 1 and len(result.trials) == 1
    assert result.best["bilateral_weight"] == 4.5 and result.best["bilateral_spatial_sigma"] == 65.0
    assert 0.0 <= result.best["miou"] <= 1.0
    result.to_json(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["best"] == result.best


def test_command_line(voc_dir, tmp_path, capsys):
    from deeplab_keras.app.evaluate_cli import main

    path = tmp_path / "m.keras"
    _constant_model(0).save(path)
    out = tmp_path / "eval.json"
    assert main(["--model", str(path), "--data-dir", str(voc_dir), "--limit", "3",
                 "--flip", "--pad-to", "129", "--output", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["num_images"] == 3 and saved["settings"]["flip"] is True
    assert saved["settings"]["pad_to"] == 129
    assert "mean IoU" in capsys.readouterr().out
    assert main(["--model", str(tmp_path / "missing.keras")]) == 2
    assert "No model file" in capsys.readouterr().err
    assert main(["--model", str(path), "--crf-params", "w1"]) == 2
    assert main(["--model", str(path), "--data-dir", str(voc_dir), "--limit", "1", "--output", str(out),
                 "--crf-params", "iterations=1,spatial_kernel=lattice"]) == 0
    assert json.loads(out.read_text())["settings"]["crf"]["spatial_kernel"] == "lattice"
    assert main(["--model", str(path), "--crf-params", "spatial_kernel=gauss"]) == 2
    assert "spatial_kernel='gauss'" in capsys.readouterr().err
    assert main(["--model", str(path), "--pad-to", "0"]) == 2
    assert "--pad-to 0" in capsys.readouterr().err


def test_command_line_names_a_released_label_set(voc_dir, tmp_path):
    # A 182-class model (deeplab-pytorch's COCO-Stuff head) gets COCO-Stuff's names.
    from deeplab_keras.app.evaluate_cli import main
    from deeplab_keras.labels import COCOSTUFF_CLASSES

    inp = keras.Input((None, None, 3))
    x = keras.layers.AveragePooling2D(8, strides=8, padding="same")(inp)
    keras.Model(inp, keras.layers.Conv2D(182, 1)(x)).save(tmp_path / "stuff.keras")
    out = tmp_path / "eval.json"
    assert main(["--model", str(tmp_path / "stuff.keras"), "--data-dir", str(voc_dir),
                 "--limit", "1", "--output", str(out)]) == 0
    text = out.read_text()
    assert COCOSTUFF_CLASSES[181] in text and COCOSTUFF_CLASSES[100] in text
