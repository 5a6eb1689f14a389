"""Coarse-to-fine search of the dense-CRF parameters on a validation subset.

DeepLab v1 (ICLR 2015, Sec. 4.1) and v2 (TPAMI 2017, Sec. 4.1) fix the
smoothness kernel (w2 = 3, sigma_gamma = 1 or 3) and cross-validate the
appearance kernel's weight w1 and widths sigma_alpha (position) and sigma_beta
(colour) on 100 val images, coarse to fine; the ranges searched are
w1 in [3, 6], sigma_alpha in [30, 100], sigma_beta in [3, 6] (DESIGN.md Sec. 2).

The network runs once per image (its full-resolution logits are kept); each
candidate setting then only re-runs the CRF. The coarse stage is a grid over the
three ranges; each fine round evaluates the 3x3x3 neighbourhood of the best
setting so far with half the previous spacing, clipped to the ranges.

Example:
    >>> result = search_crf(model, voc_dir, "val", num_classes=21, limit=100)
    >>> result.best
    {'bilateral_weight': ..., 'bilateral_spatial_sigma': ..., 'bilateral_color_sigma': ..., 'miou': ...}
"""

import dataclasses
import itertools
import json
import time

import numpy as np
import tensorflow as tf

from deeplab_keras.evaluation.evaluate import Predictor, _read_example
from deeplab_keras.evaluation.metrics import ConfusionMatrix

PARAMS = ("bilateral_weight", "bilateral_spatial_sigma", "bilateral_color_sigma")


@dataclasses.dataclass
class CrfSearchResult:
    """Outcome of `search_crf`.

    Attributes:
      best: the best setting {"bilateral_weight" (w1), "bilateral_spatial_sigma"
        (sigma_alpha), "bilateral_color_sigma" (sigma_beta), "miou"}.
      baseline_miou: mIoU of the same images without CRF.
      trials: every evaluated setting with its mIoU and stage ("coarse", "fine1", ...).
      fixed: the parameters held fixed (w2, sigma_gamma, iterations).
      num_images: images used; failed: [(name, message)] of images that could not be read.
    """

    best: dict
    baseline_miou: float
    trials: list
    fixed: dict
    num_images: int
    failed: list

    def to_json(self, path):
        from deeplab_keras.utils.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(dataclasses.asdict(self), indent=2) + "\n")


def _check_range(name, lo_hi):
    lo, hi = (float(v) for v in lo_hi)
    if not 0 < lo <= hi:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high. Received: {name}={lo_hi!r}")
    return lo, hi


def _grid(lo, hi, points):
    return [float(v) for v in np.linspace(lo, hi, points)] if points > 1 else [(lo + hi) / 2]


def coarse_to_fine(score, ranges, coarse_points=3, fine_rounds=1):
    """Maximise `score(params, stage)` over a box, coarse grid then local refinement.

    Args:
      score: callable(dict name -> float, stage str) -> float (higher is better).
      ranges: dict name -> (low, high); the search box.
      coarse_points: grid points per axis in the coarse stage (1: the box centre).
      fine_rounds: rounds that evaluate the 3^d neighbourhood of the best setting
        so far, the spacing halved each round, clipped to the box.

    Returns:
      (best dict with the parameters and "miou", list of trial dicts with
      "miou" and "stage"); no setting is evaluated twice.
    """
    names = list(ranges)
    scores, trials = {}, []

    def evaluate(values, stage):
        key = tuple(round(float(v), 6) for v in values)
        if key not in scores:
            params = dict(zip(names, key))
            scores[key] = float(score(params, stage))
            trials.append({**params, "miou": scores[key], "stage": stage})

    grids = [_grid(*ranges[n], coarse_points) for n in names]
    for combo in itertools.product(*grids):
        evaluate(combo, "coarse")
    steps = [(ranges[n][1] - ranges[n][0]) / max(coarse_points - 1, 1) for n in names]
    for round_index in range(1, fine_rounds + 1):
        centre = max(scores, key=scores.get)
        steps = [s / 2 for s in steps]
        axes = [sorted({min(max(c + d * st, ranges[n][0]), ranges[n][1]) for d in (-1, 0, 1)})
                for n, c, st in zip(names, centre, steps)]
        for combo in itertools.product(*axes):
            evaluate(combo, f"fine{round_index}")
    best_key = max(scores, key=scores.get)
    return {**dict(zip(names, best_key)), "miou": scores[best_key]}, trials


def search_crf(model, data_dir, split="val", *, num_classes, limit=100, examples=None,
               w1_range=(3.0, 6.0), sigma_alpha_range=(30.0, 100.0), sigma_beta_range=(3.0, 6.0),
               coarse_points=3, fine_rounds=1, spatial_weight=3.0, spatial_sigma=1.0,
               iterations=10, scales=(1.0,), verbose=True):
    """Search w1, sigma_alpha, sigma_beta of `deeplab_keras.crf.DenseCRF` for the best mIoU.

    Args:
      model: single-scale DeepLab model.
      data_dir, split: VOCdevkit directory and split (ignored if `examples` is given).
      num_classes: C.
      limit: first `limit` images of the split (the papers use 100).
      examples: explicit list of `voc.Example`s instead of data_dir/split.
      w1_range, sigma_alpha_range, sigma_beta_range: search ranges.
      coarse_points: grid points per parameter in the coarse stage (>= 1).
      fine_rounds: refinement rounds around the best setting (>= 0).
      spatial_weight, spatial_sigma: the fixed smoothness kernel (w2, sigma_gamma).
      iterations: mean-field iterations.
      scales: inference scales of the network (MSC when more than one).
      verbose: print each trial.

    Returns:
      `CrfSearchResult`.
    """
    from deeplab_keras.crf import dense_crf
    from deeplab_keras.data import voc
    from deeplab_keras.data.decode import DataError
    from deeplab_keras.preprocessing import deprocess_images

    ranges = {"bilateral_weight": _check_range("w1_range", w1_range),
              "bilateral_spatial_sigma": _check_range("sigma_alpha_range", sigma_alpha_range),
              "bilateral_color_sigma": _check_range("sigma_beta_range", sigma_beta_range)}
    for name, value, low in (("coarse_points", coarse_points, 1), ("fine_rounds", fine_rounds, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}. Received: {name}={value!r}")
    if examples is None:
        examples = voc.list_examples(str(data_dir), split)
    examples = list(examples)[:limit] if limit else list(examples)
    if not examples:
        raise ValueError("search_crf needs at least one image. Received: 0 examples")

    # The network runs once per image.
    predictor = Predictor(model, scales)
    cache, failed = [], []
    baseline = ConfusionMatrix(num_classes)
    for ex in examples:
        try:
            image, label = _read_example(ex, num_classes)
            logits = predictor(image)
        except (DataError, ValueError, OSError, tf.errors.OpError) as e:
            failed.append((ex.name, str(e).splitlines()[0]))
            continue
        rgb = tf.cast(tf.round(tf.clip_by_value(deprocess_images(tf.constant(image)), 0, 255)), tf.uint8)
        cache.append((rgb, logits, label))
        baseline.update(label, tf.argmax(logits, -1).numpy())
    if not cache:
        raise ValueError(f"No image could be read for the CRF search; failures: {failed[:3]}")

    fixed = {"spatial_weight": float(spatial_weight), "spatial_sigma": float(spatial_sigma),
             "iterations": int(iterations)}

    def score(params, stage):
        @tf.function(reduce_retracing=True)
        def refine(rgb, logits):
            return dense_crf(rgb[None], logits[None], **fixed, **params)[0]

        acc = ConfusionMatrix(num_classes)
        start = time.time()
        for rgb, logits, label in cache:
            acc.update(label, tf.argmax(refine(rgb, logits), -1).numpy())
        if verbose:
            print(f"[crf_search] {stage}: w1={params[PARAMS[0]]:g} sigma_alpha="
                  f"{params[PARAMS[1]]:g} sigma_beta={params[PARAMS[2]]:g} -> mIoU "
                  f"{acc.mean_iou():.4f} ({time.time() - start:.1f} s)", flush=True)
        return acc.mean_iou()

    best, trials = coarse_to_fine(score, ranges, coarse_points, fine_rounds)
    if verbose:
        print(f"[crf_search] best: w1={best[PARAMS[0]]:g} sigma_alpha={best[PARAMS[1]]:g} "
              f"sigma_beta={best[PARAMS[2]]:g} mIoU {best['miou']:.4f} (without CRF "
              f"{baseline.mean_iou():.4f}, {len(cache)} images)", flush=True)
    return CrfSearchResult(best=best, baseline_miou=baseline.mean_iou(), trials=trials, fixed=fixed,
                           num_images=len(cache), failed=failed)
