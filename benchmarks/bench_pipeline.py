"""Input pipeline throughput next to the LargeFOV training step rate.

The goal (issue 4): the tf.data pipeline at crop 321 delivers at least 3x the
images/s of a full-size vgg16_largefov training step on the same machine, so it
is never the bottleneck.

Measured:
  1. built-in dataset generation (300 train + 100 val) time;
  2. header pre-scan time per example;
  3. pipeline images/s, training mode, crop 321, on the built-in dataset and
     on VOC-sized synthetic JPEGs (500x375, the size of most VOC images);
  4. training step images/s: vgg16_largefov (21 classes, full width), SGD +
     stride-8 cross-entropy, random weights, on preprocessed 321x321 inputs.

  5. with --layout (issue 14, your own data): the same pipeline on a generated
     folder of 1,000 512x512 JPEG images and PNG masks in one of the layouts of
     `deeplab_keras.data.custom` (images/+masks/ with index masks; a CVAT-style
     VOC-like export and CamVid with RGB colour masks mapped through their
     colour tables), plus the time to open the folder (listing, pairing, class
     table, header pre-scan).

Usage:
  python benchmarks/bench_pipeline.py                 # everything (a few minutes on 2 cores)
  python benchmarks/bench_pipeline.py --skip-train    # pipeline only
  python benchmarks/bench_pipeline.py --layout camvid --layout folders   # your own data
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from _machine import cpu_description  # noqa: E402


def _pipeline_rate(data_dir, batch_size, batches, num_classes=None, warmup=3):
    """(open + header scan seconds, pipeline images/s) in training mode at crop 321.

    One timing loop for every source: the built-in and VOC-sized VOCdevkits
    and your own data in each layout (num_classes None: the dataset's own).
    """
    from deeplab_keras.data import make_dataset

    t = time.perf_counter()
    ds = make_dataset(data_dir, "train", training=True, batch_size=batch_size,
                      crop_size=321, num_classes=num_classes, seed=0, repeat=True)
    opened = time.perf_counter() - t
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(it)
    images.numpy()
    return opened, batches * batch_size / (time.perf_counter() - start)


def _voc_sized(root, count):
    from deeplab_keras.data import synthetic

    names = [f"2007_{i:06d}" for i in range(count)]
    exs = synthetic.make_examples(names, seed=1, min_hw=(375, 500), max_hw=(375, 500),
                                  num_classes=6)
    synthetic.write_voc(root, exs, {"train": names, "val": names[:1], "trainval": names})
    return root


LAYOUTS = ("folders", "voc_export", "camvid")
# CamVid class_dict.csv rows (a subset) for the colour layouts.
_TABLE = [("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Road", (128, 64, 128)),
          ("Tree", (128, 128, 0)), ("Car", (64, 0, 128)), ("Pedestrian", (64, 64, 0)),
          ("Void", (0, 0, 0))]


def _write_layout(root, layout, count, size, seed=0):
    """`count` JPEG images + PNG masks of size x size in `layout` under `root`."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = np.array([c for _, c in _TABLE], np.uint8)
    n_val = max(1, count // 10)
    if layout == "voc_export":
        (root / "labelmap.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / "labelmap.txt").write_text(
            "# label:color_rgb:parts:actions\n"
            + "".join(f"{n}:{r},{g},{b}::\n" for n, (r, g, b) in _TABLE))
    elif layout == "camvid":
        root.mkdir(parents=True, exist_ok=True)
        (root / "class_dict.csv").write_text(
            "name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in _TABLE))
    names = []
    for i in range(count):
        split = "val" if i < n_val else "train"
        # Blocky class maps (16 px cells) and a smooth textured image, like a scene.
        cells = rng.integers(0, len(_TABLE), (size // 16 + 1, size // 16 + 1))
        rows = np.kron(cells, np.ones((16, 16), np.int64))[:size, :size]
        image = np.clip(colours[rows].astype(np.int16)
                        + rng.normal(0, 20, (size, size, 3)).astype(np.int16), 0, 255)
        image = Image.fromarray(image.astype(np.uint8))
        stem = f"{i:06d}"
        if layout == "folders":
            img_path = root / "images" / f"{stem}.jpg"
            mask_path = root / "masks" / f"{stem}.png"
            mask = Image.fromarray(np.where(rows == len(_TABLE) - 1, 255, rows).astype(np.uint8))
        elif layout == "voc_export":
            img_path = root / "JPEGImages" / f"{stem}.jpg"
            mask_path = root / "SegmentationClass" / f"{stem}.png"
            mask = Image.fromarray(colours[rows])
        else:
            img_path = root / split / f"{stem}.jpg"
            mask_path = root / f"{split}_labels" / f"{stem}_L.png"
            mask = Image.fromarray(colours[rows])
        img_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        image.save(img_path, quality=90)
        mask.save(mask_path)
        names.append((split, stem))
    if layout == "folders":
        for split in ("train", "val"):
            (root / f"{split}.txt").write_text(
                "".join(f"{s}\n" for sp, s in names if sp == split))
    elif layout == "voc_export":
        sets = root / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        for split in ("train", "val"):
            (sets / f"{split}.txt").write_text(
                "".join(f"{s}\n" for sp, s in names if sp == split))
    return root


def _step_rate(batch_size, steps):
    import keras
    import numpy as np
    import tensorflow as tf

    from deeplab_keras.models import build_model
    from deeplab_keras.training.losses import segmentation_cross_entropy

    model = build_model("vgg16_largefov", num_classes=21)
    opt = keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(0, 50, (batch_size, 321, 321, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 21, (batch_size, 321, 321)).astype(np.int32))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = segmentation_cross_entropy(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step(x, y).numpy()  # trace + first run
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y).numpy()
    return steps * batch_size / (time.perf_counter() - start), model.count_params()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--pipeline-batches", type=int, default=20)
    p.add_argument("--voc-sized-images", type=int, default=60)
    p.add_argument("--train-batch-size", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--layout", action="append", choices=LAYOUTS,
                   help="benchmark your own data in this layout instead (repeatable)")
    p.add_argument("--layout-images", type=int, default=1000)
    p.add_argument("--layout-size", type=int, default=512)
    args = p.parse_args(argv)
    if args.layout:
        return _main_layouts(args)

    import tensorflow as tf

    from deeplab_keras.data import builtin, decode, voc

    print(f"cpu cores: {os.cpu_count()} ({cpu_description()}), tensorflow {tf.__version__}, "
          f"load average at start: {os.getloadavg()[0]:.1f}")
    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    try:
        t = time.perf_counter()
        root = builtin.generate(os.path.join(tmp, "builtin"), seed=0)
        print(f"builtin generation ({builtin.NUM_TRAIN}+{builtin.NUM_VAL} images): "
              f"{time.perf_counter() - t:.1f} s")

        exs = voc.list_examples(root, "trainval")
        t = time.perf_counter()
        for e in exs:
            decode.inspect_image(e.image_path)
            decode.inspect_label(e.label_path)
        print(f"header pre-scan: {(time.perf_counter() - t) / len(exs) * 1e3:.2f} ms/example")

        _, rate = _pipeline_rate(root, args.batch_size, args.pipeline_batches,
                                 builtin.NUM_CLASSES)
        print(f"pipeline, builtin (~200x150 JPEG), crop 321, batch {args.batch_size}: "
              f"{rate:.1f} images/s")
        vroot = _voc_sized(os.path.join(tmp, "vocsized"), args.voc_sized_images)
        _, vrate = _pipeline_rate(vroot, args.batch_size, args.pipeline_batches, 6)
        print(f"pipeline, VOC-sized (500x375 JPEG), crop 321, batch {args.batch_size}: "
              f"{vrate:.1f} images/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if not args.skip_train:
        _report_step(args, {"builtin": rate, "VOC-sized": vrate})
    return 0


def _report_step(args, rates):
    """The LargeFOV training step rate and each pipeline rate's multiple of it."""
    srate, params = _step_rate(args.train_batch_size, args.train_steps)
    print(f"train step vgg16_largefov ({params:,} params), 321x321, batch "
          f"{args.train_batch_size}: {srate:.2f} images/s")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print("pipeline / step: " + ", ".join(f"{k} {v / srate:.0f}x" for k, v in rates.items())
          + " (goal >= 3x)")


def _main_layouts(args):
    import tensorflow as tf

    print(f"cpu cores: {os.cpu_count()} ({cpu_description()}), "
          f"tensorflow {tf.__version__}, load average at start: {os.getloadavg()[0]:.1f}")
    rates = {}
    tmp = tempfile.mkdtemp(prefix="bench_layouts_")
    try:
        for layout in args.layout:
            t = time.perf_counter()
            root = _write_layout(os.path.join(tmp, layout), layout, args.layout_images,
                                 args.layout_size)
            gen = time.perf_counter() - t
            opened, rate = _pipeline_rate(root, args.batch_size, args.pipeline_batches)
            rates[layout] = rate
            print(f"{layout}: {args.layout_images} images {args.layout_size}x"
                  f"{args.layout_size} JPEG + PNG masks (generated in {gen:.0f} s); open + "
                  f"header scan {opened:.2f} s; pipeline crop 321, batch {args.batch_size}: "
                  f"{rate:.1f} images/s")
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.skip_train:
        _report_step(args, rates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
