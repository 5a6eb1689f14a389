"""Command line of `python train.py` and `deeplab-train`.

With no arguments it runs the `builtin` preset: generates the built-in dataset
if absent, trains a reduced-width DeepLab-LargeFOV on the CPU, evaluates it on
the val split (mIoU and per-class table) and exports a SavedModel to
`savedmodels/builtin/<version>/`.

Examples:
    python train.py
    python train.py --preset deeplab-v1-largefov --data-dir ~/data/VOCdevkit \\
        --sbd-dir ~/data/benchmark_RELEASE
    python train.py --preset deeplab-v2-resnet101 --tfds --set base_lr=1e-4
    python train.py --preset builtin --steps 100 --output-dir /tmp/run --resume never
    python train.py --preset deeplab-v2-resnet101 --data-dir ... --mixed-precision float16
    python train.py --preset deeplab-v2-resnet101 --data-dir ... --accumulate 10   # Caffe 1 x 10
    python train.py --data-dir ~/data/camvid --class-weights median_frequency
    python train.py --list-presets
"""

import argparse
import os
import sys

from deeplab_keras.training.config import (MIXED_PRECISIONS, RESUME_MODES, apply_overrides,
                                           available_presets, get_preset)

# Command-line flags that map one-to-one onto TrainConfig fields.
_FLAG_FIELDS = {
    "data_dir": "data_dir", "sbd_dir": "sbd_dir", "output_dir": "output_dir",
    "batch_size": "batch_size", "steps": "steps", "resume": "resume",
    "backbone_weights": "backbone_weights", "export_dir": "export_dir",
    "tfds_data_dir": "tfds_data_dir", "tfds_manual_dir": "tfds_manual_dir",
    "seed": "seed", "checkpoint_every": "checkpoint_every",
    "mixed_precision": "mixed_precision", "accumulate": "accumulate",
    "num_classes": "num_classes", "class_weights": "class_weights",
    "unknown_color": "unknown_color", "ignore_value": "ignore_value",
    "ignore_classes": "ignore_classes", "image_summary_every": "image_summary_every",
}


def build_parser():
    p = argparse.ArgumentParser(
        prog="deeplab-train",
        description="Train DeepLab v1/v2 (Keras 3, TensorFlow). Without arguments: the "
                    "'builtin' preset on the built-in dataset (CPU, minutes), then "
                    "evaluation and a SavedModel export.",
        epilog="Any config field can be set with --set key=value (see --print-config).")
    p.add_argument("--preset", default="builtin",
                   help=f"named config (default: builtin). One of: {', '.join(available_presets())}")
    p.add_argument("--data-dir", help="VOCdevkit directory (containing VOC2012/), or your own "
                                      "data: images/ + masks/, a VOC-like labelling-tool export "
                                      "(labelmap.txt / _classes.csv) or CamVid (class_dict.csv)")
    p.add_argument("--num-classes", help="classes incl. background (default: the preset's; "
                                         "your own data: its class table's, a different value "
                                         "is an error)")
    p.add_argument("--class-weights", metavar="{none,inverse_frequency,median_frequency}|W,...",
                   help="loss weight per class: from the training split's class frequencies "
                        "(your own data) or a comma-separated list; 255 stays ignored")
    p.add_argument("--unknown-color", choices=("error", "ignore"),
                   help="your own data: mask colours/values not in the class table are an "
                        "error (default) or ignored (label 255)")
    p.add_argument("--ignore-classes", metavar="NAME,...",
                   help="your own data: class-table names whose pixels are ignored (label 255) "
                        "instead of trained (default: void,unlabelled,unlabeled,ignore,__ignore__)")
    p.add_argument("--ignore-value", help="your own index masks: the pixel value meaning "
                                          "'ignore' (default 255; 'none': no value)")
    p.add_argument("--sbd-dir", help="SBD benchmark_RELEASE (or SegmentationClassAug) for train_aug")
    p.add_argument("--tfds", action="store_true", help="read the TFDS builder voc2012_segmentation")
    p.add_argument("--tfds-data-dir", help="TFDS data_dir")
    p.add_argument("--tfds-manual-dir", help="where the VOC/SBD archives are, to prepare TFDS")
    p.add_argument("--output-dir", help="run directory (default: runs/<preset>)")
    p.add_argument("--batch-size", help="global batch size (split across replicas)")
    p.add_argument("--steps", help="training iterations")
    p.add_argument("--seed", help="random seed")
    p.add_argument("--checkpoint-every", help="steps between checkpoints")
    p.add_argument("--multi-worker", action="store_true",
                   help="MultiWorkerMirroredStrategy configured by TF_CONFIG")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISIONS,
                   help="train under Keras mixed_float16 / mixed_bfloat16 (logits, loss, CRF, "
                        "BN statistics and weights stay float32; float16 uses loss scaling)")
    p.add_argument("--accumulate", metavar="N",
                   help="gradient accumulation: split each batch into N micro-batches, one "
                        "update per batch (Caffe iter_size; batch_size stays the effective batch)")
    p.add_argument("--jit-compile", action="store_true",
                   help="compile the training step with XLA")
    p.add_argument("--image-summary-every", metavar="N",
                   help="TensorBoard images (val image | prediction | ground truth) every N "
                        "steps (--set image_summary_images=K for K images; default off)")
    p.add_argument("--resume", choices=RESUME_MODES,
                   help="auto: continue from the newest checkpoint in the output dir if any "
                        "(default); require: fail without one; never: fail if one exists")
    p.add_argument("--backbone-weights",
                   help="'imagenet', a keras.applications weights file, or 'none'")
    p.add_argument("--export-dir", help="SavedModel base directory (default: savedmodels/ for builtin)")
    p.add_argument("--no-export", action="store_true", help="do not export a SavedModel")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate after training")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    return p


def resolve_config(args):
    """The `TrainConfig` for parsed arguments: preset, then flags, then --set."""
    config = get_preset(args.preset)
    overrides = {}
    for flag, field in _FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    if args.tfds:
        overrides["tfds"] = "true"
    if args.multi_worker:
        overrides["multi_worker"] = "true"
    if args.jit_compile:
        overrides["jit_compile"] = "true"
    if args.no_export:
        overrides["export_dir"] = "none"
    if args.no_eval:
        overrides["evaluate"] = "false"
    if args.output_dir is None and config.output_dir is None:
        overrides["output_dir"] = f"runs/{config.name}"
    config = apply_overrides(config, {k: str(v) for k, v in overrides.items()})
    return apply_overrides(config, args.set)


def _check_explicit_num_classes(args, config):
    """A --num-classes (or --set num_classes=) that differs from your dataset's is an
    error, even when it equals the preset's value (which `trainer.resolve_data`
    otherwise replaces by the dataset's count)."""
    explicit = args.num_classes is not None or any(
        item.split("=", 1)[0].strip() == "num_classes" for item in args.set)
    if not explicit or not config.data_dir or config.tfds:
        return
    from deeplab_keras.training.inputs import open_custom

    dataset = open_custom(config)
    if dataset is not None and dataset.num_classes != config.num_classes:
        raise ValueError(
            f"--num-classes {config.num_classes} does not match the dataset at {dataset.root}: "
            f"its class table ({dataset.table.source or 'the mask values'}) has "
            f"{dataset.num_classes} classes ({', '.join(dataset.class_names)}). Leave "
            "--num-classes out to use the dataset's.")


def main(argv=None):
    """Entry point; returns the process exit code (0 ok, 1 training failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        for name in available_presets():
            c = get_preset(name)
            print(f"{name:28s} model={c.model} batch={c.batch_size} steps={c.steps} "
                  f"lr={c.base_lr:g} {c.lr_policy} crop={c.crop_size}"
                  + (" msc" if c.msc_training else ""))
        return 0
    try:
        config = resolve_config(args)
        _check_explicit_num_classes(args, config)
    except (ValueError, FileNotFoundError) as e:
        print(f"deeplab-train: error: {e} (see --help)", file=sys.stderr)
        return 2
    if args.print_config:
        import json

        print(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        return 0

    import time

    from deeplab_keras.app.job import run
    from deeplab_keras.training.callbacks import TrainingDivergedError

    start = time.time()
    print(f"[train] preset {config.name}: {config.model}, batch {config.batch_size}, "
          f"{config.steps} steps, lr {config.base_lr:g} ({config.lr_policy}), crop "
          f"{config.crop_size}, output {config.run_dir}", flush=True)
    try:
        result, evaluation, export_path = run(config)
    except TrainingDivergedError as e:
        print(f"deeplab-train: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        if os.environ.get("DEEPLAB_KERAS_TRACEBACK"):
            raise
        print(f"deeplab-train: error: {e}", file=sys.stderr)
        return 2
    print(f"[train] done in {time.time() - start:.0f} s: step {result.step}, run directory "
          f"{result.run_dir}" + (f", mIoU {evaluation.miou:.4f}" if evaluation else "")
          + (f", SavedModel {export_path}" if export_path else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
