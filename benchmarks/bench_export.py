#!/usr/bin/env python
"""Latency and file size of every export format, with and without the CRF.

Full-size VGG16-LargeFOV (20.5 M parameters, 21 classes; random weights, which
do not change the cost) at 513 x 513, batch 1, on this machine's CPU:

  TF float32   the export graph as a tf.function (pre-processing, model,
               bilinear upsampling, [CRF], argmax) in TensorFlow
  SavedModel   the exported SavedModel's serving_images signature, reloaded
  TFLite       float32 / float16 / dynamic_int8 / int8, LiteRT Interpreter
  ONNX         onnxruntime, CPUExecutionProvider

Every runtime gets the same number of threads (--threads, default: all
cores). Each figure is the median (and min) wall time of --repeats runs after
one warm-up run. Int8 calibration uses --calibration-images crops of the
built-in data (latency does not depend on calibration quality).

Usage:
  python benchmarks/bench_export.py --size 513 --repeats 3 \
      --out benchmarks/results/export.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _machine import cpu_description  # noqa: E402


def timeit(fn, repeats):
    fn()  # warm-up: tracing, allocation, delegate preparation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def path_size(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vgg16_largefov")
    p.add_argument("--size", type=int, default=513)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--width-multiplier", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--crf-iterations", type=int, default=10)
    p.add_argument("--crf-repeats", type=int, default=None,
                   help="timed runs for the CRF rows (default: --repeats)")
    p.add_argument("--calibration-images", type=int, default=8)
    p.add_argument("--no-crf", action="store_true", help="skip the CRF rows")
    p.add_argument("--formats", default="tf,saved_model,tflite_float32,tflite_float16,"
                                        "tflite_dynamic_int8,tflite_int8,onnx")
    p.add_argument("--out", default=None, help="write a markdown report here")
    args = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from deeplab_keras.crf import DenseCRF
    from deeplab_keras.export import export_saved_model
    from deeplab_keras.export.onnx import export_onnx
    from deeplab_keras.export.serving import fixed_size_function
    from deeplab_keras.export.tflite import export_tflite, representative_images, tflite_op_names
    from deeplab_keras.models import build_model

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    size = (args.size, args.size)
    keras.utils.set_random_seed(0)
    model = build_model(args.model, num_classes=args.num_classes,
                        width_multiplier=args.width_multiplier)
    print(f"{args.model}: {model.count_params():,} parameters, input {size}, "
          f"{args.threads} threads", flush=True)
    # A generated photo-like scene (colour regions, edges, sensor noise): the
    # network's cost does not depend on the content, the CRF's does. Uniform
    # noise, used before, is the lattice's worst case (almost every pixel's
    # simplex is its own, about 6 lattice points per pixel) and no photo.
    from deeplab_keras.crf.testing import make_scene

    image = make_scene(*size, args.num_classes, seed=0, num_shapes=24)[0][None].astype(np.float32)
    calibration = None
    if "tflite_int8" in formats:
        calibration = representative_images(size, args.calibration_images,
                                            num_classes=max(21, args.num_classes))

    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    crf_settings = [None] if args.no_crf else [None, DenseCRF(iterations=args.crf_iterations)]
    for crf in crf_settings:
        tag = "crf" if crf is not None else "plain"
        repeats = args.repeats if crf is None else (args.crf_repeats or args.repeats)
        labels = {}

        def record(name, seconds, file_size=None, export_s=None, out=None, ops=None):
            median, best = seconds
            if out is not None:
                labels[name] = np.asarray(out)
            rows.append({"format": name, "crf": crf is not None, "repeats": repeats, "median_s": median,
                         "min_s": best, "size": file_size, "export_s": export_s, "ops": ops})
            size_text = f"{file_size / 2**20:.1f} MiB" if file_size else "-"
            print(f"[{tag}] {name:<22} median {median * 1000:8.0f} ms  min {best * 1000:8.0f} ms"
                  f"  {size_text}", flush=True)

        if "tf" in formats:
            fn = fixed_size_function(model, size, crf)
            x = tf.constant(image)
            out = {}
            record("TF float32 (tf.function)",
                   timeit(lambda: out.update(fn(x)), repeats), out=None)
            labels["TF float32 (tf.function)"] = out["labels"].numpy()
        if "saved_model" in formats:
            t0 = time.perf_counter()
            path = export_saved_model(model, work / f"sm_{tag}", crf=crf)
            export_s = time.perf_counter() - t0
            sig = tf.saved_model.load(str(path)).signatures["serving_images"]
            x = tf.constant(image)
            out = {}
            record("SavedModel", timeit(lambda: out.update(sig(images=x)), repeats),
                   path_size(path), export_s)
            labels["SavedModel"] = out["labels"].numpy()
        for q in ("float32", "float16", "dynamic_int8", "int8"):
            if f"tflite_{q}" not in formats:
                continue
            t0 = time.perf_counter()
            path = export_tflite(model, work / f"{tag}_{q}.tflite", size=size, quantization=q,
                                 crf=crf, representative_data=calibration if q == "int8" else None)
            export_s = time.perf_counter() - t0
            runner = Interpreter(model_path=str(path), num_threads=args.threads).get_signature_runner()
            out = {}
            record(f"TFLite {q}", timeit(lambda: out.update(runner(images=image)), repeats),
                   path_size(path), export_s, ops=sorted(set(tflite_op_names(path))))
            labels[f"TFLite {q}"] = out["labels"]
        if "onnx" in formats:
            t0 = time.perf_counter()
            path = export_onnx(model, work / f"{tag}.onnx", size=size, crf=crf)
            export_s = time.perf_counter() - t0
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            out = {}
            record("ONNX Runtime", timeit(
                lambda: out.update(labels_=session.run(["labels"], {"images": image})[0]),
                repeats), path_size(path), export_s)
            labels["ONNX Runtime"] = out["labels_"]
        # Same inputs, so every format should give (nearly) the TF labels.
        ref = labels.get("TF float32 (tf.function)")
        for row in rows:
            if row["crf"] == (crf is not None) and ref is not None and row["format"] in labels:
                row["agreement"] = float(np.mean(labels[row["format"]] == ref))

    shutil.rmtree(work, ignore_errors=True)
    report = render(args, model, rows)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(report)
        os.replace(tmp, args.out)
    return 0


def render(args, model, rows):
    cmd = "python benchmarks/bench_export.py " + " ".join(sys.argv[1:])
    lines = [
        "# Export benchmark: latency and size per format",
        "",
        f"- Command: `{cmd}`",
        f"- Machine: 2-core CPU, no GPU (shared with other jobs: figures are noisy); "
        f"{cpu_description()}, {args.threads} threads per runtime",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Model: {args.model}, {model.count_params():,} parameters, {args.num_classes} classes, "
        f"random weights; input {args.size}x{args.size}, batch 1; CRF: {args.crf_iterations} "
        "mean-field iterations (DenseCRF defaults otherwise)",
        f"- Median and min of {args.repeats} runs (CRF rows: {args.crf_repeats or args.repeats}) "
        "after a warm-up run; every row's graph includes pre-processing, bilinear upsampling "
        "to the input size and argmax.",
        "- 'labels = TF': pixels whose label equals the TF float32 row's on the same generated "
        "image; with random weights the logits are near-ties, so this is a consistency check, "
        "not an accuracy figure (tests/test_export.py measures accuracy on a trained model).",
        "",
        "| format | CRF | median latency (s) | min (s) | vs TF float32 | file size | "
        "labels = TF | export time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = {r["crf"]: r["median_s"] for r in rows if r["format"].startswith("TF float32")}
    for r in rows:
        speedup = base.get(r["crf"])
        speed = f"{speedup / r['median_s']:.2f}x" if speedup else "-"
        size = f"{r['size'] / 2**20:.1f} MiB" if r["size"] else "-"
        agree = f"{r['agreement']:.2%}" if "agreement" in r else "-"
        export = f"{r['export_s']:.0f}" if r["export_s"] is not None else "-"
        lines.append(f"| {r['format']} | {'yes' if r['crf'] else 'no'} | {r['median_s']:.2f} | "
                     f"{r['min_s']:.2f} | {speed} | {size} | {agree} | {export} |")
    ops = [r for r in rows if r.get("ops")]
    if ops:
        lines += ["", "TFLite op sets:", ""]
        for r in ops:
            lines.append(f"- {r['format']}{' + CRF' if r['crf'] else ''}: {', '.join(r['ops'])}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
