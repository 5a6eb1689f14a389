"""Training: typed presets, the paper's schedules / optimizer / loss, and the `fit` driver.

  config      `TrainConfig`, the preset registry, checked `key=value` overrides.
  values      the typed parsing of override values (`coerce`, `check_type`).
  schedules   v1 "step" and v2 "poly" learning-rate schedules.
  optimizer   `DeepLabSGD`: momentum, L2 decay on kernels, 10x on the classifier.
  losses      softmax cross-entropy at output stride 8 with 255 ignored.
  callbacks   atomic checkpoints, NaN stop, resume helpers.
  strategy    MirroredStrategy / MultiWorkerMirroredStrategy.
  inputs      the run's data: source, class count, checks, the training stream.
  networks    the models, `compile`, LSUV init, checkpoint loading.
  trainer     `train(config)`: the recipe top to bottom.

`run(config)` (train, evaluate, export) and the `deeplab-train` command line sit
in the layer above, `deeplab_keras.app`; `run` is re-exported here lazily, for
backwards compatibility (the one upward import of this package, allow-listed in
tests/test_architecture.py).

Every name is imported on first use (`config` imports no TensorFlow).

Example:
    >>> from deeplab_keras.training import get_preset, apply_overrides, run
    >>> cfg = apply_overrides(get_preset("builtin"), {"steps": 100})
    >>> result, evaluation, export_path = run(cfg)
"""

# Everything is imported on first use, config included (it reads the data layer's
# built-in set and class tables): `import deeplab_keras` imports the loss, schedule
# and optimizer modules to register them, and should not load the data layer.
_LAZY = {
    **{name: "deeplab_keras.training.config" for name in (
        "PRESETS", "TrainConfig", "apply_overrides", "available_presets", "get_preset",
        "register_preset")},
    "StepDecay": "deeplab_keras.training.schedules",
    "PolyDecay": "deeplab_keras.training.schedules",
    "make_schedule": "deeplab_keras.training.schedules",
    "DeepLabSGD": "deeplab_keras.training.optimizer",
    "make_optimizer": "deeplab_keras.training.optimizer",
    "SegmentationCrossEntropy": "deeplab_keras.training.losses",
    "segmentation_cross_entropy": "deeplab_keras.training.losses",
    "reduce_labels": "deeplab_keras.training.losses",
    "TrainingDivergedError": "deeplab_keras.training.callbacks",
    "make_strategy": "deeplab_keras.training.strategy",
    "train": "deeplab_keras.training.trainer",
    "run": "deeplab_keras.app.job",  # upward, lazy: see the docstring
    "TrainResult": "deeplab_keras.training.trainer",
}

__all__ = [*_LAZY]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deeplab_keras.training' has no attribute {name!r}")
