"""Forward latency of the full-size DeepLab models, batch 1, on this machine.

Each model is compiled once per input size with `tf.function` (inference mode),
run `--warmup` times, then timed `--runs` times; the median is reported.

Usage:
  python benchmarks/bench_models.py --runs 3 --output benchmarks/results/models.md
"""

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_keras.models import available_models, build_model  # noqa: E402


def time_model(model, size, runs, warmup):
    """Median and min seconds of `runs` batch-1 forward passes at size x size."""
    forward = tf.function(lambda x: model(x, training=False), jit_compile=False)
    x = tf.constant(np.random.default_rng(0).normal(0, 50, (1, size, size, 3)).astype("float32"))
    for _ in range(warmup):
        forward(x).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward(x).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=available_models(), choices=available_models())
    parser.add_argument("--sizes", nargs="+", type=int, default=[321, 513])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", type=pathlib.Path, default=None, help="markdown file to write")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or any(s < 1 for s in args.sizes):
        parser.error(f"runs >= 1, warmup >= 0, sizes >= 1. Received: {args.runs}, {args.warmup}, {args.sizes}")

    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        model = build_model(name)
        for size in args.sizes:
            median, best = time_model(model, size, args.runs, args.warmup)
            rows.append((name, model.count_params(), size, median, best))
            print(f"{name:16s} {size}x{size}: median {median * 1000:8.0f} ms  (min {best * 1000:.0f} ms)",
                  flush=True)
        del model
    load_after = os.getloadavg()

    if args.output:
        lines = [
            "# Forward latency of the DeepLab models (batch 1)",
            "",
            f"Command: `python benchmarks/bench_models.py "
            + ("" if args.models == available_models() else f"--models {' '.join(args.models)} ")
            + f"--runs {args.runs} --warmup {args.warmup} "
            f"--sizes {' '.join(map(str, args.sizes))} --output {args.output}`",
            "",
            f"Machine: 2-core CPU, no GPU ({platform.processor() or platform.machine()}), "
            f"TensorFlow {tf.__version__}. Date: {datetime.date.today().isoformat()}.",
            f"Load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
            "(the CPU was shared with other jobs; figures are upper bounds for an idle machine).",
            "",
            f"Inference mode, `tf.function`, random weights, median of {args.runs} runs after "
            f"{args.warmup} warm-up run(s).",
            "",
            "| model | parameters | input | median latency (ms) | min (ms) |",
            "| --- | ---: | --- | ---: | ---: |",
        ]
        lines += [f"| {n} | {p:,} | {s}x{s} | {m * 1000:.0f} | {b * 1000:.0f} |" for n, p, s, m, b in rows]
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_suffix(args.output.suffix + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(args.output)  # atomic: a kill leaves the previous file
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
