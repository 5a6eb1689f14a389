"""A short run on the built-in data: the loss falls and the mIoU rises far above chance."""

import numpy as np
import pytest

from deeplab_keras.data import builtin
from deeplab_keras.evaluation import evaluate_split
from deeplab_keras.evaluation.metrics import ConfusionMatrix
from deeplab_keras.training import apply_overrides, get_preset
from deeplab_keras.training.trainer import train


def test_short_builtin_run_learns(tmp_path):
    # The builtin preset at 1/4 of its width-squared cost and 250 of its 400 steps.
    config = apply_overrides(get_preset("builtin"), dict(
        width_multiplier=0.125, steps=250, steps_per_epoch=50, checkpoint_every=250,
        val_miou_images=20, output_dir=str(tmp_path / "run"), evaluate=False, export_dir=None))
    result = train(config, verbose=0)
    losses = result.history["loss"]  # mean loss of each 50-step block
    assert len(losses) == 5 and np.all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses

    data_dir = builtin.ensure_builtin()
    scores = evaluate_split(result.model, data_dir, "val", num_classes=builtin.NUM_CLASSES,
                            limit=20, verbose=False)
    # Chance here: every pixel called background (the majority class). A uniform
    # random guess scores lower still (about 0.03).
    majority = ConfusionMatrix(builtin.NUM_CLASSES)
    labels = np.asarray(scores.confusion).sum(axis=1)
    majority.matrix[:, 0] = labels
    assert majority.mean_iou() < 0.15
    assert scores.miou > 0.3 and scores.miou > 2.5 * majority.mean_iou(), scores.miou
    # Objects are found, not just background: background IoU beats the all-background
    # guess and most foreground classes overlap their ground truth.
    assert scores.iou[0] > majority.iou_per_class()[0], scores.iou
    assert sum(iou > 0.2 for iou in scores.iou[1:]) >= 3, scores.iou

    # The per-epoch val mIoU (same 20 images) is in the history and the CSV log, for
    # the training curves; the last one is the final model's.
    curve = result.history["val_miou"]
    assert len(curve) == 5 and curve[-1] == pytest.approx(scores.miou, abs=1e-6), curve
    assert curve[-1] > curve[0], curve
    import csv

    with open(result.run_dir / "training_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_miou"]) for r in rows] == pytest.approx(curve)


def test_msc_training_has_one_loss_per_scale_plus_fused(tmp_path):
    """The v2 recipe: MSC inputs 1, 0.75, 0.5 and 4 losses (3 scales + max-fused)."""
    config = apply_overrides(get_preset("builtin"), dict(
        width_multiplier=0.0625, crop_size=65, batch_size=2, steps=2, steps_per_epoch=2,
        checkpoint_every=2, msc_training=True, output_dir=str(tmp_path / "msc"),
        evaluate=False, export_dir=None))
    result = train(config, verbose=0)
    per_output = {k for k in result.history if k.endswith("_loss")}
    assert per_output == {"fused_loss", "scale_1.00_loss", "scale_0.75_loss", "scale_0.50_loss"}
    total = result.history["loss"][0]
    assert total == pytest.approx(sum(result.history[k][0] for k in per_output), rel=1e-4)
    assert result.model.output_shape[-1] == builtin.NUM_CLASSES  # single-scale inference copy
