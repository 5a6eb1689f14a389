"""Converter benchmark, and what our half-pixel resizing costs against Caffe's Interp.

1. Conversion of a full-size ResNet-101 caffemodel, generated here at the real
   size (random weights, the official layer names and blob layouts, 21-class
   ASPP; ~170 MB for one copy of the weights, ~510 MB with the *_res075 /
   *_res05 MSC copies) in a temporary folder that is deleted afterwards. Each
   conversion runs in a fresh subprocess: wall time of read / build + map /
   save, and the peak RSS of that process (getrusage) minus the RSS after
   importing TensorFlow and Keras.
2. Half-pixel (ours: `tf.image.resize`) against align-corners (Caffe Interp)
   resizing, on a reduced-width ResNet-101 with random Caffe weights through the
   Caffe reference of tests/test_convert_reference.py: (a) the final x8
   upsampling of single-scale logits (Caffe fc8_interp zoom 8 then crop), (b)
   the MSC net (Caffe: inputs by Interp shrink 2 / shrink 4 zoom 3, score maps
   Interp'ed to the scale-1 size, Eltwise MAX; ours: `wrap_msc`). Reported as
   argmax agreement and max |dlogit| relative to the logit scale.

Usage:
  python benchmarks/bench_convert.py [--msc-copies] [--skip-convert] [--skip-resize]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _machine import cpu_description  # noqa: E402


def make_file(path, msc_copies):
    from deeplab_keras.convert.caffemodel import write_caffemodel
    from tests.test_convert_reference import random_blobs, resnet101_net

    net = resnet101_net(mult=1.0)
    blobs = random_blobs(net, seed=0)
    layers = [(l["name"], l["type"], blobs[l["name"]]) for l in net if l["name"] in blobs]
    if msc_copies:
        base = list(layers)
        for suffix in ("res075", "res05"):
            for name, t, arrays in base:
                copy = f"fc1_voc12_{suffix}_{name[-2:]}" if name.startswith("fc1_") else f"{name}_{suffix}"
                layers.append((copy, t, arrays))
    write_caffemodel(path, layers)
    return sum(a.size for _, _, arrays in layers for a in arrays)


CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import keras, tensorflow  # noqa: F401
from deeplab_keras.convert.caffemodel import read_caffemodel
from deeplab_keras.convert import convert as C
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
read_caffemodel(sys.argv[1])
t2 = time.perf_counter()
result = C.convert(sys.argv[1])
t3 = time.perf_counter()
C.save_atomic(result.model, sys.argv[2])
t4 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "parse_only_s": t2 - t1, "convert_s": t3 - t2, "save_s": t4 - t3,
                  "base_rss_mb": base / 1024, "peak_rss_mb": peak / 1024,
                  "mapped": len(result.plan.mapped), "msc_copies": len(result.plan.msc_copies),
                  "leftovers": len(result.plan.leftovers)}))
"""


def bench_convert(msc_copies):
    tmp = tempfile.mkdtemp(prefix="bench_convert_")
    try:
        src = os.path.join(tmp, "train_iter_20000.caffemodel")
        t = time.perf_counter()
        n = make_file(src, msc_copies)
        gen = time.perf_counter() - t
        size = os.path.getsize(src) / 1e6
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run([sys.executable, "-c", CHILD, src, os.path.join(tmp, "out.keras")],
                             capture_output=True, text=True, env=env, cwd=ROOT)
        if out.returncode:
            raise RuntimeError(out.stderr[-3000:])
        stats = json.loads(out.stdout.strip().splitlines()[-1])
        stats.update(file_mb=size, floats=n, generate_s=gen, msc=msc_copies)
        return stats
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_resize(sizes=((513, 513), (375, 500))):
    import tensorflow as tf

    from deeplab_keras.convert.mapping import plan_weights
    from deeplab_keras.models import build_model, wrap_msc
    from tests.test_convert_reference import (caffe_msc_size, caffe_tensors, images, random_blobs,
                                              resize_align_corners, resnet101_net, run_net)

    mult = 1 / 16
    net = resnet101_net(mult=mult)
    blobs = random_blobs(net, seed=1)
    model = build_model("resnet101_aspp", width_multiplier=mult)
    for layer, arrays in plan_weights(model, caffe_tensors(blobs), "caffe", "bench").assign:
        layer.set_weights(arrays)
    msc = wrap_msc(model)
    rows = []
    for hw in sizes:
        # Both follow the test protocol: the image padded to 513x513 with the mean (0), crop at the end.
        x = np.zeros((1, 513, 513, 3), np.float32)
        x[:, :hw[0], :hw[1]] = images(hw, seed=2)
        # (a) final upsampling: Caffe fc8_interp zoom 8 ((h-1)*8+1 = 513) vs our half-pixel resize to 513.
        ref = run_net(net, blobs, x)
        h, w = ref.shape[1:3]
        caffe_up = resize_align_corners(ref, ((h - 1) * 8 + 1, (w - 1) * 8 + 1))[:, :hw[0], :hw[1]]
        ours_up = tf.image.resize(ref, (513, 513)).numpy()[:, :hw[0], :hw[1]]
        a = (caffe_up.argmax(-1) == ours_up.argmax(-1)).mean()
        da = np.abs(caffe_up - ours_up).max() / np.abs(ref).max()
        # (b) MSC: Caffe-exact (align corners, Caffe sizes) vs ours (half-pixel, ceil sizes).
        maps = []
        for s in (1.0, 0.75, 0.5):
            size = (caffe_msc_size(513, s), caffe_msc_size(513, s))
            xs = x.astype(np.float64) if s == 1.0 else resize_align_corners(x.astype(np.float64), size)
            logits = run_net(net, blobs, xs.astype(np.float32))
            maps.append(logits if s == 1.0 else resize_align_corners(logits, ref.shape[1:3]))
        caffe_msc = np.max(maps, axis=0)
        ours_msc = msc(x).numpy()
        crop = (slice(None), slice(0, -(-hw[0] // 8)), slice(0, -(-hw[1] // 8)))  # logits over the image
        b = (caffe_msc[crop].argmax(-1) == ours_msc[crop].argmax(-1)).mean()
        db = np.abs(caffe_msc - ours_msc).max() / np.abs(caffe_msc).max()
        caffe_full = resize_align_corners(caffe_msc, ((h - 1) * 8 + 1, (w - 1) * 8 + 1))[:, :hw[0], :hw[1]]
        ours_full = tf.image.resize(ours_msc, (513, 513)).numpy()[:, :hw[0], :hw[1]]
        c = (caffe_full.argmax(-1) == ours_full.argmax(-1)).mean()
        rows.append(dict(size=f"{hw[0]}x{hw[1]}", upsample_argmax_agree=a, upsample_max_rel=da,
                         msc_logit_argmax_agree=b, msc_logit_max_rel=db, msc_full_res_argmax_agree=c))
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--msc-copies", action="store_true", help="also time a file with the MSC copies (~510 MB)")
    p.add_argument("--skip-convert", action="store_true")
    p.add_argument("--skip-resize", action="store_true")
    args = p.parse_args()
    print(f"CPU: {cpu_description()} (shared machine: other jobs running)")
    if not args.skip_convert:
        for msc in ([False, True] if args.msc_copies else [False]):
            s = bench_convert(msc)
            print(f"ResNet-101 caffemodel{' + MSC copies' if msc else ''}: {s['file_mb']:.0f} MB, "
                  f"{s['floats'] / 1e6:.1f} M floats; parse only {s['parse_only_s']:.2f} s; "
                  f"full convert (parse + build + map + set) {s['convert_s']:.2f} s; save .keras {s['save_s']:.2f} s; "
                  f"peak RSS {s['peak_rss_mb']:.0f} MB (after imports {s['base_rss_mb']:.0f} MB, "
                  f"+{s['peak_rss_mb'] - s['base_rss_mb']:.0f} MB); mapped {s['mapped']} layers, "
                  f"{s['msc_copies']} MSC copies skipped, {s['leftovers']} leftovers")
    if not args.skip_resize:
        for r in bench_resize():
            print(f"{r['size']}: x8 upsampling argmax agreement {r['upsample_argmax_agree'] * 100:.2f} % "
                  f"(max |d| {r['upsample_max_rel']:.3f} of the logit scale); MSC logits agreement "
                  f"{r['msc_logit_argmax_agree'] * 100:.2f} % (max |d| {r['msc_logit_max_rel']:.3f}); "
                  f"MSC at full resolution {r['msc_full_res_argmax_agree'] * 100:.2f} %")
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
