"""Training throughput (images/s) of the full-size DeepLab models at crop 321.

Each configuration is the real training step of `deeplab_keras.training`: the
model (and for ResNet-101 the MSC wrapper with its 4 losses, as the
deeplab-v2-resnet101 preset trains), `DeepLabSGD` with the poly schedule, the
stride-8 loss, `model.compile(jit_compile=False)`, then `train_on_batch` on a
fixed batch of random images and labels (the input pipeline is benchmarked
separately in bench_pipeline.py). One warm-up step (tracing), then `--steps`
timed steps; throughput = batch * steps / seconds.

Usage:
  python benchmarks/bench_training.py --batch 1 --steps 3 --output benchmarks/results/training.md
"""

import argparse
import datetime
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CONFIGS = (  # (label, preset whose model / MSC setting is used, overrides)
    ("VGG16-LargeFOV (v1)", "deeplab-v1-largefov", {}),
    ("VGG16-ASPP-S (v2)", "deeplab-v2-vgg16-aspp-s", {}),
    ("VGG16-ASPP-L (v2)", "deeplab-v2-vgg16-aspp-l", {}),
    ("ResNet-101-ASPP, single scale", "deeplab-v2-resnet101", {"msc_training": "false"}),
    ("ResNet-101-ASPP, MSC 4 losses (v2 recipe)", "deeplab-v2-resnet101", {}),
)


MARKER = "<!-- end of the generated table -->"


def time_training(preset, batch, crop, steps, overrides=None):
    """(seconds per step, parameters) of `steps` training steps after one warm-up step."""
    import keras

    from deeplab_keras.training import apply_overrides, get_preset
    from deeplab_keras.training.losses import SegmentationCrossEntropy
    from deeplab_keras.training.optimizer import make_optimizer
    from deeplab_keras.training.schedules import make_schedule
    from deeplab_keras.training.trainer import build_networks

    keras.backend.clear_session()
    config = apply_overrides(get_preset(preset), {"backbone_weights": "none", "batch_size": batch,
                                                  "crop_size": crop, **(overrides or {})})
    base, model = build_networks(config)
    optimizer = make_optimizer(model, make_schedule(config))
    if isinstance(model.output, dict):
        keys = sorted(model.output)
        loss = {k: SegmentationCrossEntropy() for k in keys}
    else:
        keys, loss = None, SegmentationCrossEntropy()
    model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (batch, crop, crop, 3)).astype("float32")
    y = rng.integers(0, config.num_classes, (batch, crop, crop)).astype("int32")
    y = {k: y for k in keys} if keys else y
    model.train_on_batch(x, y)  # trace + first step
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps, base.count_params()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--crop", type=int, default=321)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--only", help="comma-separated preset names (default: all four)")
    p.add_argument("--output", help="write a Markdown table here")
    args = p.parse_args(argv)
    for name, value in (("batch", args.batch), ("crop", args.crop), ("steps", args.steps)):
        if value < 1:
            raise SystemExit(f"--{name} must be positive. Received: {value}")
    configs = CONFIGS if not args.only else [c for c in CONFIGS if c[1] in args.only.split(",")]
    rows = []
    for label, preset, overrides in configs:
        seconds, params = time_training(preset, args.batch, args.crop, args.steps, overrides)
        rows.append((label, preset, params, seconds, args.batch / seconds))
        print(f"{label:38s} {params / 1e6:6.1f} M params  {seconds:6.2f} s/step  "
              f"{args.batch / seconds:6.3f} images/s", flush=True)
    if args.output:
        import tensorflow as tf

        lines = [
            "# Training throughput (images/s), full-size models, crop "
            f"{args.crop}, batch {args.batch}",
            "",
            f"- Command: `python benchmarks/bench_training.py --batch {args.batch} --crop {args.crop} "
            f"--steps {args.steps}" + (f" --only {args.only}" if args.only else "") + "`",
            "- Machine: 2-core CPU, no GPU (shared with other jobs while measured; figures are "
            "indicative), " + f"Python {platform.python_version()}, TensorFlow {tf.__version__}",
            f"- Date: {datetime.date.today().isoformat()}",
            "- What is timed: `train_on_batch` (forward, loss, backward, DeepLabSGD update) after "
            f"one warm-up step; {args.steps} steps; random init (no ImageNet weights needed to time).",
            "",
            "| model | preset | parameters | s / step | images / s |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for label, preset, params, seconds, ips in rows:
            lines.append(f"| {label} | {preset} | {params / 1e6:.1f} M | {seconds:.2f} | {ips:.3f} |")
        out = pathlib.Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        # Hand-written notes after the marker (e.g. the default-run timing) are kept.
        tail = ""
        if out.exists() and MARKER in out.read_text():
            tail = out.read_text().split(MARKER, 1)[1]
        out.write_text("\n".join(lines) + "\n\n" + MARKER + tail)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
