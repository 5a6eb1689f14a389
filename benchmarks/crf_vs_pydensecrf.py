"""Benchmark: deeplab_keras.crf.dense_crf against pydensecrf.

A generated 375x500 scene (piecewise-smooth colour regions, edges, noise),
21 classes, coarse stride-8 logits, 10 mean-field iterations with the DeepLab
v2 settings (w1=4, sa=67, sb=3, w2=3, sg=1). Both run in this process,
alternating, `--repeats` times each after one warm-up; the script prints the
median wall times, their ratio (ours / pydensecrf), label agreement, mean
absolute probability difference and the peak resident memory each adds.

    python benchmarks/crf_vs_pydensecrf.py [--repeats 7] [--implementation auto]
        [--tflite] [--onnx] [--threads 2] [--device cpu|gpu]
    python benchmarks/crf_vs_pydensecrf.py --photos [coffee chelsea ...]
        [--sizes 375x500x21,480x640x41] [--repeats 3] [--tflite] [--onnx] [--function-eager]
        [--spatial-kernel exact|lattice] [--profile]

`--photos` runs on real photographs (scikit-image's bundled ones, see
benchmarks/_photos.py for the crop, the resize and the coarse logits from a
k-means labelling) instead of the generated scene: per photograph and size,
alternating in this process, ours called eagerly (`DenseCRF()(images,
logits)`, the README's call), ours in `tf.function`, and pydensecrf, with
wall and CPU time (user + sys of all threads), label agreement and the
lattice point count M beside the generated scene's at the same size.

Wall time is what the goal is stated in; the CPU time (process time, all
threads) is printed too because on a shared machine wall time mostly measures
the other processes. `--tflite` also converts the graph at this size to TFLite
(builtin ops), both as traced plainly and as `export_tflite` traces it
(`portable_ops("tflite")`), and times the LiteRT interpreter with `--threads`
threads, each beside a fresh pydensecrf run; `--onnx` does the same for
tf2onnx + ONNX Runtime. `--device gpu` runs ours on the first GPU (the graph
is placed there whole; pydensecrf stays on the CPU) and fails if there is none.
"""

import argparse
import os
import statistics
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _machine import cpu_description  # noqa: E402
from deeplab_keras.crf import dense_crf  # noqa: E402
from deeplab_keras.crf.testing import coarse_logits, make_scene, mean_iou, pydensecrf_inference  # noqa: E402

SETTINGS = dict(iterations=10, spatial_weight=3.0, spatial_sigma=1.0, bilateral_weight=4.0,
                bilateral_spatial_sigma=67.0, bilateral_color_sigma=3.0)
OURS = {}  # our options that pydensecrf has no counterpart for (--spatial-kernel)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the process's resident set every millisecond while active."""

    def __enter__(self):
        self.start = _rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def added(self):
        return self.peak - self.start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--implementation", default="auto", choices=["auto", "sparse", "portable", "tflite"])
    parser.add_argument("--tflite", action="store_true", help="also time the converted TFLite graph")
    parser.add_argument("--onnx", action="store_true", help="also time the tf2onnx graph in ONNX Runtime")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT / ONNX Runtime threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--downsample", type=int, default=1,
                        help="ours with DenseCRF(downsample=N), the approximate faster mode (TF only)")
    parser.add_argument("--spatial-kernel", default="exact", choices=["exact", "lattice"],
                        help="ours with DenseCRF(spatial_kernel=...): the exact Gaussian (default) or "
                             "pydensecrf's lattice approximation of it")
    parser.add_argument("--profile", action="store_true",
                        help="print the top 5 op types by time for TF (TF profiler; with --photos "
                             "graph and eager, on the first photograph) and, with --onnx, ONNX "
                             "Runtime (its profiler)")
    parser.add_argument("--photos", nargs="*", default=None, metavar="NAME",
                        help="real photographs from skimage.data (default: coffee chelsea astronaut)")
    parser.add_argument("--function-eager", action="store_true",
                        help="--photos: also time the eager function call dense_crf(images, logits) "
                             "beside the layer's")
    parser.add_argument("--sizes", default="375x500x21,480x640x41",
                        help="--photos: HxWxC sizes, comma-separated")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1. Received: {args.repeats}")
    OURS["spatial_kernel"] = args.spatial_kernel
    if args.photos is not None:
        return _photos_main(parser, args)

    image, labels = make_scene(args.height, args.width, args.classes, seed=args.seed, num_shapes=24)
    logits = coarse_logits(labels, args.classes, seed=args.seed + 1)
    images_t = tf.constant(image[None])
    logits_t = tf.constant(logits[None])

    @tf.function(input_signature=[tf.TensorSpec([1, args.height, args.width, 3], tf.uint8),
                                  tf.TensorSpec([1, args.height, args.width, args.classes], tf.float32)])
    def ours(images, logits):
        return dense_crf(images, logits, implementation=args.implementation, downsample=args.downsample,
                         **SETTINGS, **OURS)

    if args.device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            parser.error("--device gpu: TensorFlow sees no GPU on this machine")
        device = "/GPU:0"
    else:
        device = "/CPU:0"

    def run_ours():
        with tf.device(device):
            return ours(images_t, logits_t).numpy()[0]

    def run_ref():
        return pydensecrf_inference(image, logits, **SETTINGS)

    # Warm-up (tracing) and the memory each adds at its first full run.
    with PeakRSS() as mem_ours:
        q_ours = run_ours()
    with PeakRSS() as mem_ref:
        q_ref = run_ref()
    times_ours, times_ref, cpu_ours, cpu_ref = [], [], [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run_ours()
        times_ours.append(time.perf_counter() - t0)
        cpu_ours.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        run_ref()
        times_ref.append(time.perf_counter() - t0)
        cpu_ref.append(time.process_time() - c0)
    with PeakRSS() as mem_ours_steady:
        run_ours()

    med_ours, med_ref = statistics.median(times_ours), statistics.median(times_ref)
    agree = float(np.mean(q_ours.argmax(-1) == q_ref.argmax(-1)))
    unary_miou = mean_iou(logits.argmax(-1), labels, args.classes)
    import resource

    print(f"CPU: {cpu_description()}, {os.cpu_count()} logical cores")
    print(f"image {args.height}x{args.width}, {args.classes} classes, {SETTINGS['iterations']} iterations, "
          f"implementation={args.implementation}, downsample={args.downsample}, spatial_kernel={args.spatial_kernel}, tf {tf.__version__}, "
          f"threads intra={tf.config.threading.get_intra_op_parallelism_threads()} (0 = all cores), "
          f"cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
    print(f"ours        median {med_ours:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times_ours)})")
    print(f"pydensecrf  median {med_ref:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times_ref)})")
    print(f"ratio ours/pydensecrf {med_ours / med_ref:.2f} (wall); CPU time median ours "
          f"{statistics.median(cpu_ours):.3f} s, pydensecrf {statistics.median(cpu_ref):.3f} s, "
          f"ratio {statistics.median(cpu_ours) / statistics.median(cpu_ref):.2f}")
    print(f"label agreement {agree * 100:.3f} %, mean |dQ| {np.abs(q_ours - q_ref).mean():.2e}, "
          f"max |dQ| {np.abs(q_ours - q_ref).max():.3f}")
    print(f"mIoU vs ground truth: unary {unary_miou * 100:.2f}, "
          f"ours {mean_iou(q_ours.argmax(-1), labels, args.classes) * 100:.2f}, "
          f"pydensecrf {mean_iou(q_ref.argmax(-1), labels, args.classes) * 100:.2f}")
    print(f"peak RSS added: ours first run (incl. tracing) {mem_ours.added / 2**20:.0f} MiB, "
          f"ours steady {mem_ours_steady.added / 2**20:.0f} MiB, pydensecrf {mem_ref.added / 2**20:.0f} MiB; "
          f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    if args.profile:
        _print_top("tf", _tf_op_profile(run_ours))
    if args.tflite:
        _time_tflite(args, image, logits, q_ours, run_ref, target=None)
        _time_tflite(args, image, logits, q_ours, run_ref, target="tflite")
    if args.onnx:
        _time_onnx(args, image, logits, q_ours, run_ref)


def _parse_sizes(parser, text):
    sizes = []
    for item in text.split(","):
        try:
            h, w, c = (int(v) for v in item.lower().split("x"))
        except ValueError:
            parser.error(f"--sizes: each size is HxWxC, e.g. 375x500x21. Received: {item!r}")
        if min(h, w) < 1 or c < 2:
            parser.error(f"--sizes: H, W >= 1 and C >= 2. Received: {item!r}")
        sizes.append((h, w, c))
    return sizes


def _lattice_points(image):
    """M, the lattice points of the bilateral kernel (DeepLab v2 sigmas) on an image."""
    from deeplab_keras.crf import build_lattice
    from deeplab_keras.crf.dense_crf import _bilateral_features

    features = _bilateral_features(tf.constant(image[None], tf.float32), SETTINGS["bilateral_spatial_sigma"],
                                   SETTINGS["bilateral_color_sigma"])
    return int(build_lattice(features, implementation="sparse").num_points)


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _photos_main(parser, args):
    """Real photographs: ours eager, ours in tf.function, pydensecrf, alternating."""
    import resource

    from _photos import PHOTOS, photo_case
    from deeplab_keras.crf import DenseCRF

    names = args.photos or list(PHOTOS[:3])
    sizes = _parse_sizes(parser, args.sizes)
    print(f"CPU: {cpu_description()}, {os.cpu_count()} logical cores; tf {tf.__version__}; "
          f"{SETTINGS['iterations']} iterations, DeepLab v2 settings, implementation={args.implementation}, "
          f"spatial_kernel={args.spatial_kernel}; "
          f"{args.repeats} alternating repeats after warm-up; load avg {os.getloadavg()[0]:.1f}")
    med = statistics.median
    for height, width, classes in sizes:
        scene, _ = make_scene(height, width, classes, seed=args.seed, num_shapes=24)
        print(f"\n{height}x{width}x{classes}: generated scene M = {_lattice_points(scene)} lattice points")
        layer = DenseCRF(implementation=args.implementation, **SETTINGS, **OURS)
        graph = tf.function(lambda images, logits: layer(images, logits), input_signature=[
            tf.TensorSpec([1, height, width, 3], tf.uint8), tf.TensorSpec([1, height, width, classes], tf.float32)])
        first = None
        for name in names:
            image, logits = photo_case(name, height, width, classes, seed=args.seed)
            images_t, logits_t = tf.constant(image[None]), tf.constant(logits[None])
            run = {"eager": lambda: layer(images_t, logits_t).numpy()[0],
                   "graph": lambda: graph(images_t, logits_t).numpy()[0],
                   "pydensecrf": lambda: pydensecrf_inference(image, logits, **SETTINGS)}
            with PeakRSS() as mem:
                q = {"graph": run["graph"]()}
            q["eager"] = run["eager"]()
            run["eager"]()  # the first eager call of a kind runs op by op; the second compiles
            q["pydensecrf"] = run["pydensecrf"]()
            if args.function_eager:
                run["function eager"] = lambda: dense_crf(images_t, logits_t, implementation=args.implementation,
                                                          **SETTINGS, **OURS).numpy()[0]
                q["function eager"] = run["function eager"]()
                run["function eager"]()
            wall = {k: [] for k in run}
            cpu = {k: [] for k in run}
            for _ in range(args.repeats):
                for kind, fn in run.items():
                    _, w, c = _timed(fn)
                    wall[kind].append(w)
                    cpu[kind].append(c)
            w, c = {k: med(v) for k, v in wall.items()}, {k: med(v) for k, v in cpu.items()}
            agree = float(np.mean(q["graph"].argmax(-1) == q["pydensecrf"].argmax(-1)))
            print(f"  {name}: M = {_lattice_points(image)}; wall eager {w['eager']:.3f} s, graph {w['graph']:.3f} s, "
                  f"pydensecrf {w['pydensecrf']:.3f} s (runs: "
                  + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in wall.items()) + ")")
            print(f"    ratios: eager/graph {w['eager'] / w['graph']:.2f}, graph/pydensecrf "
                  f"{w['graph'] / w['pydensecrf']:.2f}, eager/pydensecrf {w['eager'] / w['pydensecrf']:.2f}; "
                  f"CPU time (user+sys) graph {c['graph']:.3f} s, eager {c['eager']:.3f} s, pydensecrf "
                  f"{c['pydensecrf']:.3f} s, ratio graph/pydensecrf {c['graph'] / c['pydensecrf']:.2f}")
            if args.function_eager:
                print(f"    eager dense_crf(...) {w['function eager']:.3f} s wall, {c['function eager']:.3f} s CPU: "
                      f"function eager/graph {w['function eager'] / w['graph']:.2f}, max |dQ| against the graph "
                      f"{np.abs(q['function eager'] - q['graph']).max():.1e}")
            print(f"    label agreement with pydensecrf {agree * 100:.3f} %, mean |dQ| "
                  f"{np.abs(q['graph'] - q['pydensecrf']).mean():.2e}; eager vs graph max |dQ| "
                  f"{np.abs(q['eager'] - q['graph']).max():.1e}; peak RSS added by the first graph run "
                  f"{mem.added / 2**20:.0f} MiB")
            if first is None:
                first = (image, logits, q["graph"], run["pydensecrf"])
                if args.profile:
                    _print_top(f"    {name} tf graph", _tf_op_profile(run["graph"]))
                    _print_top(f"    {name} tf eager", _tf_op_profile(run["eager"]))
        if (args.tflite or args.onnx) and (height, width, classes) == sizes[0]:  # the first size only
            image, logits, q_graph, run_ref = first
            args.height, args.width, args.classes = height, width, classes
            print(f"  CRF alone converted, on {names[0]}:")
            if args.tflite:
                _time_tflite(args, image, logits, q_graph, run_ref, target=None)
                _time_tflite(args, image, logits, q_graph, run_ref, target="tflite")
            if args.onnx:
                _time_onnx(args, image, logits, q_graph, run_ref)
    print(f"\nprocess peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


def _side_by_side(args, invoke, run_ref):
    """Median times of `invoke` and pydensecrf, alternating."""
    invoke()
    ours, ref = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        invoke()
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_ref()
        ref.append(time.perf_counter() - t0)
    return statistics.median(ours), statistics.median(ref)


def _serving_function(args):
    @tf.function(input_signature=[tf.TensorSpec([1, args.height, args.width, 3], tf.uint8, name="images"),
                                  tf.TensorSpec([1, args.height, args.width, args.classes], tf.float32,
                                                name="logits")])
    def serve(images, logits):
        return dense_crf(images, logits, **SETTINGS, **OURS)
    return serve


def _time_tflite(args, image, logits, q_tf, run_ref, target):
    """target None: traced plainly (what a user gets); "tflite": export_tflite's tracing."""
    import contextlib

    from ai_edge_litert.interpreter import Interpreter

    from deeplab_keras.crf import portable_ops

    serve = _serving_function(args)
    t0 = time.perf_counter()
    with portable_ops(target) if target else contextlib.nullcontext():
        concrete = serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], serve)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = converter.convert()
    convert_s = time.perf_counter() - t0
    interpreter = Interpreter(model_content=model, num_threads=args.threads)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], image[None] if detail["dtype"] == np.uint8 else logits[None])
    med, ref = _side_by_side(args, interpreter.invoke, run_ref)
    q = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    print(f"tflite ({'plain trace' if target is None else 'portable_ops(' + repr(target) + ')'}, builtins, "
          f"{args.threads} threads): convert {convert_s:.1f} s, {len(model) / 2**10:.0f} KiB, "
          f"invoke median {med:.3f} s vs pydensecrf {ref:.3f} s: ratio {med / ref:.2f}; "
          f"label agreement with TF {np.mean(q.argmax(-1) == q_tf.argmax(-1)) * 100:.3f} %")


def _time_onnx(args, image, logits, q_tf, run_ref):
    import onnxruntime as ort
    import tf2onnx

    serve = _serving_function(args)
    t0 = time.perf_counter()
    model, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17)
    convert_s = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: (image[None] if "images" in i.name else logits[None]) for i in session.get_inputs()}
    result = {}

    def invoke():
        result["q"] = session.run(None, feeds)[0][0]

    med, ref = _side_by_side(args, invoke, run_ref)
    if args.profile:
        _print_top("onnx", _onnx_op_profile(ort, model, feeds, args.threads))
    print(f"onnx (plain trace, tf2onnx opset 17, onnxruntime {ort.__version__}, {args.threads} threads): "
          f"convert {convert_s:.1f} s, run median {med:.3f} s vs pydensecrf {ref:.3f} s: ratio {med / ref:.2f}; "
          f"label agreement with TF {np.mean(result['q'].argmax(-1) == q_tf.argmax(-1)) * 100:.3f} %")


# Events that only wrap other ops (function calls) would count their ops twice.
_WRAPPERS = {"PartitionedCall", "StatefulPartitionedCall", "__inference", "While", "If"}


def _tf_op_profile(run):
    """Seconds per TF op type over one run (TF profiler, summed over threads)."""
    import glob
    import shutil
    import tempfile

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp()
    tf.profiler.experimental.start(logdir)
    try:
        run()
    finally:
        tf.profiler.experimental.stop()
    totals = {}
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    # TF ops are "scope/name:Type"; skip runtime events such as
                    # "ExecutorState::Process" or "EagerExecute: __inference_...".
                    if name.count(":") != 1 or " " in name:
                        continue
                    kind = name.rsplit(":", 1)[-1]
                    if not kind.lstrip("_")[:1].isupper():  # oneDNN kernels are "_Mkl..."
                        continue
                    if kind not in _WRAPPERS:
                        totals[kind] = totals.get(kind, 0.0) + event.duration_ps * 1e-12
    shutil.rmtree(logdir, ignore_errors=True)
    return totals


def _onnx_op_profile(ort, model, feeds, threads):
    """Seconds per ONNX op type over one run (ONNX Runtime's profiler)."""
    import json

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)  # warm-up, profiled too: read only the last run below
    session.run(None, feeds)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    runs = [e for e in events if e.get("name") == "model_run"]
    start = runs[-1]["ts"] if runs else 0
    totals = {}
    for event in events:
        kind = event.get("args", {}).get("op_name")
        if event.get("cat") == "Node" and kind and event["ts"] >= start and event["name"].endswith("_kernel_time"):
            totals[kind] = totals.get(kind, 0.0) + event["dur"] * 1e-6
    return totals


def _print_top(form, totals, count=5):
    total = sum(totals.values()) or 1.0
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:count]
    print(f"{form} op profile, top {count} of {total:.3f} s of op time: "
          + ", ".join(f"{kind} {sec:.3f} s ({sec / total * 100:.0f} %)" for kind, sec in top))


if __name__ == "__main__":
    main()
