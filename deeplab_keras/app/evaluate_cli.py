"""`deeplab-evaluate` / `python -m deeplab_keras.evaluation`: mIoU of a trained model.

Writes the results JSON (per-class IoU under the class names: VOC's, the
built-in set's, or your own data's class table) and, next to it,
`<json stem>_confusion.png`: the confusion matrix with rows normalised and the
class names on the axes (needs matplotlib).

The model comes from a run directory (`--run-dir runs/builtin`: its config.json
and model.keras, or its newest checkpoint), a `.keras` file (`--model`), or a
checkpoint file with the preset it was trained with (`--checkpoint` + `--preset`
/ `--set`). The data default to the run's (built-in data when it had none).

Examples:
    deeplab-evaluate --run-dir runs/builtin
    deeplab-evaluate --run-dir runs/deeplab-v2-resnet101 --data-dir ~/VOCdevkit --msc --flip --crf
    deeplab-evaluate --model runs/builtin/model.keras --crf-search --limit 100
    deeplab-evaluate --checkpoint runs/x/checkpoints/ckpt-00002000.weights.h5 --preset deeplab-v1-largefov
"""

import argparse
import json
import os
import sys
from pathlib import Path

MSC_SCALES = (1.0, 0.75, 0.5)


def build_parser():
    p = argparse.ArgumentParser(
        prog="deeplab-evaluate",
        description="Evaluate a DeepLab model: VOC mIoU with 255 ignored, at full resolution, "
                    "optionally with MSC / flip / dense-CRF inference or a CRF parameter search.")
    src = p.add_argument_group("model")
    src.add_argument("--run-dir", help="a training run directory (config.json + model.keras / checkpoints)")
    src.add_argument("--model", help="a .keras model file")
    src.add_argument("--checkpoint", help="a checkpoint .weights.h5 (with --preset / --config / --set)")
    src.add_argument("--preset", help="preset the checkpoint was trained with")
    src.add_argument("--config", help="config.json the checkpoint was trained with")
    src.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config overrides for --checkpoint")
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", help="VOCdevkit directory, or your own data (images/ + masks/, "
                                         "a VOC-like export, CamVid); default: the run's, else built-in")
    data.add_argument("--unknown-color", choices=("error", "ignore"),
                      help="your own data: mask colours not in the class table are an error "
                           "(default, or the run's setting) or ignored")
    data.add_argument("--split", default=None, help="split to evaluate (default: the run's val_split, or val)")
    data.add_argument("--tfds", action="store_true", help="read the TFDS builder instead of files")
    data.add_argument("--num-classes", type=int, help="classes (default: from the model)")
    data.add_argument("--limit", type=int, help="evaluate only the first N images")
    inf = p.add_argument_group("inference")
    inf.add_argument("--msc", action="store_true", help="multi-scale inputs 1, 0.75, 0.5 (max fusion)")
    inf.add_argument("--scales", help="explicit comma-separated scales, e.g. 1,0.75,0.5")
    inf.add_argument("--flip", action="store_true", help="also average the flipped image's prediction")
    inf.add_argument("--pad-to", type=int, metavar="SIDE",
                     help="DeepLab's test protocol: pad each image (with the mean) to at least "
                          "SIDE x SIDE, e.g. 513, run the network, crop the prediction back")
    inf.add_argument("--crf", action="store_true", help="dense-CRF post-processing")
    inf.add_argument("--crf-params", default="",
                     help="DenseCRF arguments, e.g. bilateral_weight=4,bilateral_spatial_sigma=67 "
                          "(spatial_kernel=lattice: pydensecrf's spatial kernel)")
    inf.add_argument("--crf-search", action="store_true",
                     help="coarse-to-fine search of w1, sigma_alpha, sigma_beta (default 100 images)")
    p.add_argument("--output", help="JSON file for the results (default: <run-dir>/eval_<split>.json)")
    return p


def _parse_crf_params(text):
    params = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            raise ValueError(f"--crf-params items are key=value. Received: {item!r}")
        key, value = item.split("=", 1)
        key, value = key.strip(), value.strip()
        if key in ("spatial_kernel", "implementation"):  # names, checked by DenseCRF
            params[key] = value
            continue
        try:
            params[key] = int(value) if key in ("iterations", "refine_iterations", "downsample") else float(value)
        except ValueError:
            raise ValueError(f"--crf-params {key}: not a number. Received: {value!r}") from None
    return params


def _config_for(args):
    from deeplab_keras.training.config import TrainConfig, apply_overrides, get_preset

    if args.run_dir:
        config = TrainConfig.from_json(Path(args.run_dir) / "config.json")
    elif args.config:
        config = TrainConfig.from_json(args.config)
    elif args.preset:
        config = get_preset(args.preset)
    else:
        raise ValueError("--checkpoint needs --preset, --config or --run-dir (the settings the "
                         "checkpoint was trained with).")
    return apply_overrides(config, args.set)


def load_model(args):
    """(single-scale model, TrainConfig or None) for the parsed arguments."""
    import keras

    import deeplab_keras.models  # noqa: F401  (registers the custom layers)

    sources = [s for s in (args.model, args.checkpoint) if s]
    if len(sources) > 1:
        raise ValueError("Give one of --model or --checkpoint.")
    if args.model:
        path = Path(args.model)
        if not path.is_file():
            raise FileNotFoundError(f"No model file at {path}")
        return keras.models.load_model(path, compile=False), None
    if not args.run_dir and not args.checkpoint:
        raise ValueError("Say which model to evaluate: --run-dir, --model or --checkpoint.")
    config = _config_for(args)
    if args.checkpoint is None and (Path(args.run_dir) / "model.keras").is_file() and not args.set:
        return keras.models.load_model(Path(args.run_dir) / "model.keras", compile=False), config
    from deeplab_keras.training import callbacks as cb
    from deeplab_keras.training.networks import load_checkpoint_model

    ckpt = args.checkpoint
    if ckpt is None:
        latest = cb.latest_checkpoint(args.run_dir)
        if latest is None:
            raise FileNotFoundError(f"{args.run_dir} has neither model.keras nor a checkpoint.")
        ckpt = latest[1]
    return load_checkpoint_model(config, ckpt), config


def main(argv=None):
    """Entry point; returns the exit code (0 ok, 2 bad usage or unusable inputs)."""
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        if os.environ.get("DEEPLAB_KERAS_TRACEBACK"):
            raise
        print(f"deeplab-evaluate: error: {e}", file=sys.stderr)
        return 2


def _main(args):
    from deeplab_keras.evaluation.evaluate import evaluate_split, format_table

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be positive. Received: --limit {args.limit}")
    if args.pad_to is not None and args.pad_to < 1:
        raise ValueError(f"--pad-to must be a positive side in pixels. Received: --pad-to {args.pad_to}")
    crf_params = _parse_crf_params(args.crf_params)
    model, config = load_model(args)
    num_classes = args.num_classes or int(model.output_shape[-1])
    if num_classes != int(model.output_shape[-1]):
        raise ValueError(f"--num-classes {num_classes} does not match the model's "
                         f"{model.output_shape[-1]} output classes.")
    tfds = args.tfds or bool(config and config.tfds)
    data_dir = args.data_dir or (config.data_dir if config else None)
    class_names = None
    if data_dir is None and not tfds:
        from deeplab_keras.data import builtin

        data_dir = builtin.ensure_builtin()
        if num_classes == builtin.NUM_CLASSES:
            class_names = list(builtin.CLASS_NAMES)
    custom_data = False
    if data_dir is not None and not tfds:
        from deeplab_keras.data import custom

        custom_data = custom.source_kind(data_dir) != "voc"
    if class_names is None and not custom_data:  # your own data: its table's names
        from deeplab_keras.labels import labels_for

        # The released models' label sets: VOC (21), COCO (91), COCO-Stuff (182).
        names = labels_for(num_classes)
        class_names = list(names) if names else None
    split = args.split or (config.val_split if config else "val")
    if args.scales:
        scales = tuple(float(s) for s in args.scales.split(",") if s.strip())
    else:
        scales = MSC_SCALES if args.msc else (1.0,)
    out_dir = Path(args.run_dir) if args.run_dir else Path(".")

    if args.crf_search:
        from deeplab_keras.evaluation.crf_search import search_crf

        if tfds:
            raise ValueError("--crf-search reads files: give --data-dir (not --tfds).")
        result = search_crf(model, data_dir, split, num_classes=num_classes,
                            limit=args.limit or 100, scales=scales)
        output = Path(args.output) if args.output else out_dir / f"crf_search_{split}.json"
        result.to_json(output)
        print(json.dumps(result.best, indent=1))
        print(f"Results written to {output}")
        return 0

    crf = None
    if args.crf or crf_params:
        from deeplab_keras.crf import DenseCRF

        crf = DenseCRF(**crf_params)
    result = evaluate_split(model, data_dir, split, num_classes=num_classes, scales=scales,
                            flip=args.flip, crf=crf, class_names=class_names, limit=args.limit,
                            tfds=tfds, pad_to=args.pad_to,
                            ignore_value=config.ignore_value if config else 255,
                            ignore_classes=config.ignore_classes if config else None,
                            unknown_color=args.unknown_color
                            or (config.unknown_color if config else "error"),
                            tfds_data_dir=config.tfds_data_dir if config else None,
                            tfds_manual_dir=config.tfds_manual_dir if config else None)
    print(format_table(result))
    output = Path(args.output) if args.output else out_dir / f"eval_{split}.json"
    result.to_json(output)
    figure = _confusion_figure(result, output, split)
    print(f"mIoU {result.miou:.4f}; results written to {output}"
          + (f", confusion matrix {figure}" if figure else ""))
    return 0


def _confusion_figure(result, output, split):
    """`<output stem>_confusion.png` next to the JSON (None without matplotlib)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        print("[evaluate] matplotlib is not installed: no confusion-matrix figure "
              "(pip install matplotlib).", flush=True)
        return None
    from deeplab_keras.viz import plot_confusion_matrix

    path = output.with_name(output.stem + "_confusion.png")
    plot_confusion_matrix(result.confusion, result.class_names, path=path,
                          title=f"{split}: mIoU {result.miou:.4f} (rows normalised)")
    return path


if __name__ == "__main__":
    sys.exit(main())
