"""`deeplab-export` / `python export_tflite.py`: write SavedModel, TFLite and ONNX.

Usage:
  deeplab-export runs/builtin/best.keras --formats all --size 513
  deeplab-export builtin --formats saved_model,tflite_int8 --crf --overwrite
  deeplab-export vgg16_largefov --num-classes 21 --formats tflite_float32 --size 321

MODEL is a `.keras` checkpoint, a training preset name (`deeplab_keras.training`
presets) or a `build_model` name; presets and names build a randomly
initialised network (useful for latency and conversion checks; a warning says
so). Outputs, under --output-dir (default savedmodels/):

  <name>/<version>/                          SavedModel for TF Serving
  <name>/tflite/<name>_<H>x<W>[_crf]_<type>.tflite
  <name>/onnx/<name>_<H>x<W>[_crf].onnx

The TFLite op list and every file size are printed. Exit status 0 on success,
2 on a usage error (bad argument, existing output without --overwrite).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

FORMATS = ("saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic_int8",
           "tflite_int8", "onnx")
_ALIASES = {"tflite": ("tflite_float32",), "savedmodel": ("saved_model",), "all": FORMATS}
DEFAULT_FORMATS = "saved_model,tflite_float32"


def parse_formats(text):
    """'saved_model,tflite' -> ('saved_model', 'tflite_float32'), in FORMATS order."""
    chosen = set()
    for item in (t.strip().lower() for t in text.split(",")):
        if not item:
            continue
        if item in _ALIASES:
            chosen.update(_ALIASES[item])
        elif item in FORMATS:
            chosen.add(item)
        else:
            raise ValueError(f"Unknown format {item!r}. Choose from: {', '.join(FORMATS)}, "
                             f"tflite, all. Received: --formats={text}")
    if not chosen:
        raise ValueError(f"No format given. Received: --formats={text!r}")
    return tuple(f for f in FORMATS if f in chosen)


def parse_size(text):
    """'513' -> (513, 513); '321x481' -> (321, 481)."""
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"--size must be N or HxW with positive ints. Received: --size={text}")
    return size


def build_parser():
    p = argparse.ArgumentParser(
        prog="deeplab-export",
        description="Export a DeepLab model as a TF Serving SavedModel, TFLite and/or ONNX, "
                    "with pre-processing, logit upsampling and optionally the dense CRF in the graph.")
    p.add_argument("model", help="a .keras checkpoint, a training preset name or a build_model name")
    p.add_argument("--formats", default=DEFAULT_FORMATS,
                   help=f"comma-separated: {', '.join(FORMATS)}, tflite (=tflite_float32), all "
                        f"(default: {DEFAULT_FORMATS})")
    p.add_argument("--size", default="513", help="TFLite/ONNX input size, N or HxW (default 513)")
    p.add_argument("--crf", action="store_true", help="run the dense CRF in the exported graphs")
    p.add_argument("--crf-iterations", type=int, default=10, help="mean-field iterations (default 10)")
    p.add_argument("--version", type=int, default=None,
                   help="SavedModel version number (default: highest existing + 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--output-dir", default="savedmodels", help="base directory (default savedmodels/)")
    p.add_argument("--name", default=None, help="export name (default: checkpoint stem / preset name)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes for a build_model name (default 21)")
    p.add_argument("--width-multiplier", type=float, default=None,
                   help="conv width factor for a preset / build_model name")
    p.add_argument("--include-probabilities", action="store_true",
                   help="also output per-class probabilities")
    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="largest image the SavedModel bytes signature accepts (default 2048*2048)")
    p.add_argument("--calibration-images", type=int, default=100,
                   help="representative images for tflite_int8 (default 100)")
    p.add_argument("--data-dir", default=None,
                   help="VOCdevkit for int8 calibration and --check (default: the built-in data)")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="compare every TFLite/ONNX/SavedModel output with Keras on N val images")
    return p


def load_model(spec, num_classes=None, width_multiplier=None):
    """A .keras file, a preset name or a model name -> (keras.Model, name, trained)."""
    import keras

    import deeplab_keras.crf  # noqa: F401  (registers the custom layers)
    import deeplab_keras.models as models

    path = Path(spec)
    if path.suffix == ".keras" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"Checkpoint not found: {path}")
        if num_classes is not None or width_multiplier is not None:
            raise ValueError("--num-classes / --width-multiplier apply to preset and model names, "
                             f"not to a checkpoint. Received: {spec}")
        try:
            model = keras.models.load_model(str(path), compile=False)
        except Exception as e:  # noqa: BLE001 - a corrupt file must name itself
            raise ValueError(f"Could not load the Keras checkpoint {path}: {e}") from e
        return model, path.stem, True
    from deeplab_keras.training import available_presets, get_preset

    if spec in available_presets():
        cfg = get_preset(spec)
        model = models.build_model(
            cfg.model, num_classes=num_classes or cfg.num_classes,
            width_multiplier=width_multiplier or cfg.width_multiplier, dropout=cfg.dropout)
        return model, spec, False
    if spec in models.available_models():
        model = models.build_model(spec, num_classes=num_classes or 21,
                                   width_multiplier=width_multiplier or 1.0)
        return model, spec, False
    raise ValueError(
        f"MODEL must be a .keras file, a preset ({', '.join(available_presets())}) or a model "
        f"name ({', '.join(models.available_models())}). Received: {spec!r}")


def human_size(num_bytes):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{num_bytes} B"
        num_bytes /= 1024


def describe_size(path):
    """'1.2 MiB (1299234 bytes)' for a file or a directory tree."""
    num_bytes = path_size(path)
    return f"{human_size(num_bytes)} ({num_bytes} bytes)"


def path_size(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def format_op_list(op_names):
    """'CONV_2D x16, MAX_POOL_2D x5, ...' in first-seen order."""
    counts = Counter(op_names)
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in counts.items())


def run_export(args):
    """Do the exports described by parsed `args`. Returns {format: path}."""
    formats = parse_formats(args.formats)
    size = parse_size(args.size)
    if args.crf_iterations < 1:
        raise ValueError(f"--crf-iterations must be >= 1. Received: {args.crf_iterations}")
    if args.calibration_images < 1:
        raise ValueError(f"--calibration-images must be >= 1. Received: {args.calibration_images}")
    if args.version is not None and args.version < 0:
        raise ValueError(f"--version must be >= 0. Received: {args.version}")
    model, default_name, trained = load_model(args.model, args.num_classes, args.width_multiplier)
    if not trained:
        print(f"warning: {args.model!r} is not a checkpoint; exporting randomly initialised "
              "weights (fine for latency / conversion checks, not for predictions).", flush=True)
    name = args.name or default_name
    base = Path(args.output_dir) / name
    crf = None
    if args.crf:
        from deeplab_keras.crf import DenseCRF

        crf = DenseCRF(iterations=args.crf_iterations)
    tag = f"{size[0]}x{size[1]}" + ("_crf" if crf is not None else "")

    # Refuse before any slow conversion if an output exists.
    planned = {}
    for fmt in formats:
        if fmt.startswith("tflite_"):
            planned[fmt] = base / "tflite" / f"{name}_{tag}_{fmt[len('tflite_'):]}.tflite"
        elif fmt == "onnx":
            planned[fmt] = base / "onnx" / f"{name}_{tag}.onnx"
    for fmt, path in planned.items():
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} already exists. Pass --overwrite to replace it.")

    written = {}
    if "saved_model" in formats:
        from deeplab_keras.export.saved_model import export_saved_model
        from deeplab_keras.export.serving import DEFAULT_MAX_IMAGE_PIXELS

        t0 = time.perf_counter()
        written["saved_model"] = export_saved_model(
            model, base, crf=crf, version=args.version, overwrite=args.overwrite,
            include_probabilities=args.include_probabilities,
            max_image_pixels=args.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)
        print(f"saved_model  {written['saved_model']}  {describe_size(written['saved_model'])}"
              f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
        print("  signatures: serving_default(image_bytes: string[B]), "
              "serving_images(images: float32[B,H,W,3]), serving_logits(images)", flush=True)
    for fmt, path in planned.items():
        t0 = time.perf_counter()
        if fmt.startswith("tflite_"):
            from deeplab_keras.export.tflite import export_tflite, tflite_op_names

            calibration = None
            if fmt == "tflite_int8":
                from deeplab_keras.export.serving import model_num_classes
                from deeplab_keras.export.tflite import representative_images

                calibration = representative_images(
                    size, args.calibration_images, data_dir=args.data_dir,
                    num_classes=max(21, model_num_classes(model)))
            written[fmt] = export_tflite(
                model, path, size=size, quantization=fmt[len("tflite_"):], crf=crf,
                include_probabilities=args.include_probabilities,
                representative_data=calibration, overwrite=args.overwrite)
            print(f"{fmt:<13}{path}  {describe_size(path)}  "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            print(f"  ops: {format_op_list(tflite_op_names(path))}", flush=True)
            gpu = json.loads(Path(f"{path}.json").read_text())["gpu_delegate"]  # export_tflite's report
            on_cpu = (f"{gpu['num_dynamic_ops']} of {gpu['num_ops']} ops have run-time shapes and stay "
                      f"on the CPU ({', '.join(gpu['dynamic_ops'])})" if gpu["dynamic_ops"]
                      else "all shapes static")
            print(f"  GPU delegate: analyzer {'compatible' if gpu['analyzer_compatible'] else 'NOT compatible'}; "
                  f"{on_cpu}", flush=True)
        else:
            from deeplab_keras.export.onnx import export_onnx, onnx_op_types

            written[fmt] = export_onnx(model, path, size=size, crf=crf,
                                       include_probabilities=args.include_probabilities,
                                       overwrite=args.overwrite)
            print(f"{fmt:<13}{path}  {describe_size(path)}  "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            print(f"  ops: {format_op_list(onnx_op_types(path))}", flush=True)
    copy_class_sidecar(args.model, written)
    if args.check:
        check(model, written, size, args.check, crf, args.data_dir)
    return written


def copy_class_sidecar(model_spec, written):
    """Copy the `classes.json` beside a `.keras` checkpoint (a model trained on your
    own data: class names and colours) next to each export, where `deeplab-predict`
    looks for it. Returns the copies written."""
    import shutil

    from deeplab_keras.data.custom import CLASSES_FILE

    sidecar = Path(str(model_spec)).parent / CLASSES_FILE
    if not str(model_spec).endswith(".keras") or not sidecar.is_file():
        return []
    copies = []
    for fmt, path in written.items():
        folder = Path(path) if fmt == "saved_model" else Path(path).parent
        shutil.copyfile(sidecar, folder / CLASSES_FILE)
        copies.append(folder / CLASSES_FILE)
    return copies


def check(model, written, size, num_images, crf, data_dir):
    """Print each format's agreement with the Keras model on val images."""
    from deeplab_keras.export.checks import compare_outputs, eval_images, reference_outputs, run_format
    from deeplab_keras.export.serving import model_num_classes

    images, _ = eval_images(size, num_images, data_dir=data_dir,
                            num_classes=max(21, model_num_classes(model)))
    reference = reference_outputs(model, images, crf)
    for fmt, path in written.items():
        result = compare_outputs(reference, run_format(path, images))
        text = ", ".join(f"{k}={v:.6g}" for k, v in result.items())
        print(f"check {fmt:<20} {text}", flush=True)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        run_export(args)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError,
            NotADirectoryError, IsADirectoryError) as e:
        print(f"deeplab-export: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
