"""The main job: train, then evaluate on the val split, then export a SavedModel.

`run(config)` is what `python train.py` / `deeplab-train` does. It sits in the
top layer because it uses three packages that must not import each other's
callers: training (which may use evaluation's metrics), evaluation and export
(docs/ARCHITECTURE.md). `deeplab_keras.training.run` re-exports it lazily.

Example:
    >>> from deeplab_keras.training import apply_overrides, get_preset
    >>> from deeplab_keras.app import run
    >>> result, evaluation, export_path = run(apply_overrides(get_preset("builtin"), {"steps": 100}))
"""

import shutil
from pathlib import Path

from deeplab_keras.data import builtin, custom
from deeplab_keras.evaluation import evaluate_split, format_table
from deeplab_keras.export import export_saved_model
from deeplab_keras.training.inputs import class_names
from deeplab_keras.training.strategy import read_tf_config
from deeplab_keras.training.trainer import train


def run(config, *, devices=None, verbose="auto"):
    """`python train.py`: train, then evaluate on the val split and export a SavedModel.

    Returns:
      (TrainResult, EvalResult or None, export path or None).
    """
    result = train(config, devices=devices, verbose=verbose)
    config = result.config
    evaluation = export_path = None
    if not (config.multi_worker and not _chief_from_env()):
        if config.evaluate:
            data_dir = None if config.tfds else (config.data_dir or _builtin_dir())
            evaluation = evaluate_split(
                result.model, data_dir, config.val_split, num_classes=config.num_classes,
                scales=config.eval_scales, flip=config.eval_flip,
                class_names=class_names(config), tfds=config.tfds,
                ignore_value=config.ignore_value, unknown_color=config.unknown_color,
                ignore_classes=config.ignore_classes,
                tfds_data_dir=config.tfds_data_dir, tfds_manual_dir=config.tfds_manual_dir)
            print(format_table(evaluation))
            evaluation.to_json(result.run_dir / "eval_results.json")
            print(f"mIoU on {config.val_split}: {evaluation.miou:.4f}", flush=True)
        if config.export_dir:
            export_path = export_saved_model(result.model, Path(config.export_dir) / config.name)
            config.to_json(Path(export_path) / "train_config.json")
            classes = result.run_dir / custom.CLASSES_FILE
            if classes.is_file():
                shutil.copyfile(classes, Path(export_path) / custom.CLASSES_FILE)
            print(f"SavedModel written to {export_path}", flush=True)
    return result, evaluation, export_path


def _chief_from_env():
    task = read_tf_config()["task"]
    return task.get("type") == "chief" or (task.get("type") == "worker" and task.get("index") == 0)


def _builtin_dir():
    return builtin.ensure_builtin()
