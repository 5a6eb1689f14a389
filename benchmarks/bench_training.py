"""Training throughput (images/s) of the DeepLab presets, per precision, on a CPU or a GPU.

Each configuration is the real training step of `deeplab_keras.training`: the
networks of `training.networks.build_networks` (for ResNet-101 the MSC wrapper with its 4
losses, as the deeplab-v2-resnet101 preset trains) built under the precision's
dtype policy, then `training.networks.compile_for_training` (DeepLabSGD with the poly /
step schedule, the stride-8 loss per output, LossScaleOptimizer under float16,
XLA with --jit-compile, --accumulate micro-batches), then `train_on_batch` on a
fixed batch of random images and labels (the input pipeline is benchmarked in
bench_pipeline.py). One warm-up step (tracing), then `--steps` timed steps;
throughput = batch * steps / seconds.

`--overhead` instead measures the trainer's own overhead on the builtin preset:
the mean step time of `trainer.train` (its `fit` loop with the real data pipeline
and every callback, per-epoch val mIoU included) against a plain Keras
`train_on_batch` of the same network (keras SGD with momentum, Keras'
SparseCategoricalCrossentropy(ignore_class=255) on labels already at stride 8),
timed before and after it in the same process.

Usage:
  python benchmarks/bench_training.py --batch 1 --steps 3 --output benchmarks/results/training.md
  python benchmarks/bench_training.py --device gpu --batch 10 --only deeplab-v2-resnet101 \\
      --precision float32,float16,bfloat16
  python benchmarks/bench_training.py --overhead --steps 60
"""

import argparse
import datetime
import os
import pathlib
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from _machine import cpu_description  # noqa: E402

CONFIGS = (  # (label, preset whose model / MSC setting is used, overrides)
    ("builtin: VGG16-LargeFOV at 1/4 width", "builtin", {}),
    ("VGG16-LargeFOV (v1)", "deeplab-v1-largefov", {}),
    ("VGG16-ASPP-S (v2)", "deeplab-v2-vgg16-aspp-s", {}),
    ("VGG16-ASPP-L (v2)", "deeplab-v2-vgg16-aspp-l", {}),
    ("ResNet-101-ASPP, single scale", "deeplab-v2-resnet101", {"msc_training": "false"}),
    ("ResNet-101-ASPP, MSC 4 losses (v2 recipe)", "deeplab-v2-resnet101", {}),
)
PRECISIONS = ("float32", "float16", "bfloat16")
MARKER = "<!-- end of the generated table -->"


def select_device(device):
    """Make TensorFlow use only the CPU, or check that a GPU is visible. Returns its name."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
        return f"CPU: {cpu_description()}, {os.cpu_count()} logical cores"
    if not gpus:
        raise SystemExit("--device gpu: TensorFlow sees no GPU on this machine "
                         "(tf.config.list_physical_devices('GPU') is empty).")
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU: {details.get('device_name', gpus[0].name)} x{len(gpus)}"


def _config(preset, batch, crop, precision, overrides):
    from deeplab_keras.training import apply_overrides, get_preset

    return apply_overrides(get_preset(preset), {
        "backbone_weights": "none", "batch_size": batch, "crop_size": crop,
        "mixed_precision": "none" if precision == "float32" else precision, **(overrides or {})})


def time_training(preset, batch, crop, steps, overrides=None, precision="float32"):
    """(seconds per step, parameters) of `steps` training steps after one warm-up step."""
    import keras

    from deeplab_keras.training.networks import build_networks, compile_for_training

    keras.backend.clear_session()
    config = _config(preset, batch, crop, precision, overrides)
    base, model = build_networks(config)
    keys, _ = compile_for_training(config, model)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (batch, crop, crop, 3)).astype("float32")
    y = rng.integers(0, config.num_classes, (batch, crop, crop)).astype("int32")
    y = {k: y for k in keys} if keys else y
    model.train_on_batch(x, y)  # trace + first step
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps, base.count_params()


def _plain_keras_step(config, steps, repeats=2):
    """Seconds per `train_on_batch` of the builtin network with stock Keras parts."""
    import keras

    from deeplab_keras.training.losses import reduce_labels
    from deeplab_keras.training.networks import build_networks

    _, model = build_networks(config, backbone_weights=None)
    model.compile(optimizer=keras.optimizers.SGD(config.base_lr, momentum=config.momentum),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  ignore_class=255),
                  jit_compile=False)
    rng = np.random.default_rng(0)
    c = config.crop_size
    x = rng.normal(0, 50, (config.batch_size, c, c, 3)).astype("float32")
    y = rng.integers(0, config.num_classes, (config.batch_size, c, c)).astype("int32")
    h, w = model(x[:1], training=False).shape[1:3]
    y = reduce_labels(y, (h, w)).numpy()
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps * repeats):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / (steps * repeats)


def measure_overhead(steps, overrides=None):
    """Trainer step vs plain Keras step on the builtin preset (same process, interleaved)."""
    import keras

    from deeplab_keras.training import apply_overrides, get_preset
    from deeplab_keras.training.inputs import resolve_data
    from deeplab_keras.training.trainer import train

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        config = apply_overrides(get_preset("builtin"), {
            "steps": steps, "output_dir": tmp, "evaluate": "false", "export_dir": "none",
            "checkpoint_every": max(1, steps // 2), **(overrides or {})})
        config, _ = resolve_data(config)
        plain_before = _plain_keras_step(config, 10)
        timer = StepTimes()
        train(config, extra_callbacks=[timer], verbose=0)
        plain_after = _plain_keras_step(config, 10)
    step_times = np.diff(np.asarray(timer.ends))[4:]  # from step 6 on (after tracing)
    return {"plain_before": plain_before, "plain_after": plain_after,
            "trainer_mean": float(step_times.mean()), "trainer_median": float(np.median(step_times)),
            "steps": steps, "config": config}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--crop", type=int, default=321)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="float32",
                   help=f"comma-separated, from {', '.join(PRECISIONS)} (default float32)")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the training step")
    p.add_argument("--accumulate", type=int, default=1, help="micro-batches per step")
    p.add_argument("--only", help="comma-separated preset names (default: all but builtin)")
    p.add_argument("--overhead", action="store_true",
                   help="trainer step vs plain Keras train_on_batch on the builtin preset")
    p.add_argument("--output", help="write a Markdown table here")
    args = p.parse_args(argv)
    for name, value in (("batch", args.batch), ("crop", args.crop), ("steps", args.steps),
                        ("accumulate", args.accumulate)):
        if value < 1:
            raise SystemExit(f"--{name} must be positive. Received: {value}")
    precisions = [s.strip() for s in args.precision.split(",") if s.strip()]
    bad = [s for s in precisions if s not in PRECISIONS]
    if bad or not precisions:
        raise SystemExit(f"--precision must be a list from {PRECISIONS}. Received: {args.precision!r}")
    device = select_device(args.device)
    print(device, flush=True)

    if args.overhead:
        r = measure_overhead(args.steps)
        plain = (r["plain_before"] + r["plain_after"]) / 2
        print(f"builtin preset (batch {r['config'].batch_size}, crop {r['config'].crop_size}): "
              f"plain Keras train_on_batch {r['plain_before']:.3f} / {r['plain_after']:.3f} s "
              f"(before / after); trainer fit step mean {r['trainer_mean']:.3f} s, median "
              f"{r['trainer_median']:.3f} s over steps 6-{r['steps']}; overhead ratio "
              f"mean/plain {r['trainer_mean'] / plain:.2f}, median/plain "
              f"{r['trainer_median'] / plain:.2f}", flush=True)
        return

    extra = {"jit_compile": str(args.jit_compile), "accumulate": args.accumulate}
    configs = ([c for c in CONFIGS if c[1] != "builtin"] if not args.only
               else [c for c in CONFIGS if c[1] in args.only.split(",")])
    rows = []
    for label, preset, overrides in configs:
        reference = None
        for precision in precisions:
            seconds, params = time_training(preset, args.batch, args.crop, args.steps,
                                            {**overrides, **extra}, precision)
            reference = reference or (seconds if precision == "float32" else None)
            speedup = f"{reference / seconds:.2f}x" if reference else "–"
            rows.append((label, preset, precision, params, seconds, args.batch / seconds, speedup))
            print(f"{label:42s} {precision:9s} {params / 1e6:6.1f} M params  {seconds:7.3f} s/step  "
                  f"{args.batch / seconds:8.3f} images/s  vs float32 {speedup}", flush=True)
    if args.output:
        import tensorflow as tf

        flags = (f" --device {args.device} --precision {','.join(precisions)}"
                 + (" --jit-compile" if args.jit_compile else "")
                 + (f" --accumulate {args.accumulate}" if args.accumulate > 1 else "")
                 + (f" --only {args.only}" if args.only else ""))
        lines = [
            f"# Training throughput (images/s), full-size models, crop {args.crop}, batch {args.batch}",
            "",
            f"- Command: `python benchmarks/bench_training.py --batch {args.batch} --crop {args.crop} "
            f"--steps {args.steps}{flags}`",
            f"- Device: {device}; Python {platform.python_version()}, TensorFlow {tf.__version__}",
            f"- Date: {datetime.date.today().isoformat()}",
            "- What is timed: `train_on_batch` (forward, loss, backward, DeepLabSGD update) after "
            f"one warm-up step; {args.steps} steps; random init (no ImageNet weights needed to time).",
            "",
            "| model | preset | precision | parameters | s / step | images / s | vs float32 |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for label, preset, precision, params, seconds, ips, speedup in rows:
            lines.append(f"| {label} | {preset} | {precision} | {params / 1e6:.1f} M | "
                         f"{seconds:.2f} | {ips:.3f} | {speedup} |")
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
