"""Speed of the full-size DeepLab models on this machine, and against PyTorch.

Default mode: forward latency, batch 1. Each model is compiled once per input
size with `tf.function` (inference mode), run `--warmup` times, then timed
`--runs` times; the median is reported.

`--vs-torch`: the same networks built in PyTorch the way deeplab-pytorch builds
them (kazuto1011/deeplab-pytorch: ResNet-101 with MaxPool2d(3, 2, 1,
ceil_mode=True), conv4_x dilation 2, conv5_x dilation 4, bias-free convs + BN,
ASPP 3x3 convs rates 6/12/18/24 summed; VGG16-LargeFOV with 3x3/1 pools after
conv4/conv5, conv5 dilation 2, fc6 rate 12), timed side by side in one
process with the same number of threads, alternating TF and torch runs so that
both see the same machine load. Median and minimum are reported: on a shared
CPU torch's OpenMP threads suffer more from other jobs than TF's thread pool,
so the minima (the least-disturbed runs) are the fairer comparison there. Three measures (the goals of issue 13):
  - ResNet-101-ASPP forward, batch 1, 321x321 (inference);
  - ResNet-101-ASPP training step, batch 2, crop 321, frozen BN;
  - VGG16-LargeFOV training step, batch 2, crop 321, dropout 0.5.
A training step is forward + softmax cross-entropy at stride 8 + backward +
SGD momentum update: Keras `train_on_batch` (jit_compile=False) against
`loss.backward(); opt.step()`. torch is only a benchmark dependency.

Usage:
  python benchmarks/bench_models.py --runs 3 --output benchmarks/results/models.md
  python benchmarks/bench_models.py --vs-torch --runs 5
"""

import argparse
import datetime
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _machine import cpu_description  # noqa: E402
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


# ---------------------------------------------------------------------------
# The PyTorch peer (deeplab-pytorch's networks) and the side-by-side timing.


def torch_networks():
    """Builders of deeplab-pytorch's ResNet-101-ASPP and a torch VGG16-LargeFOV."""
    import torch
    from torch import nn

    class ConvBnReLU(nn.Sequential):
        def __init__(self, cin, cout, k, stride, pad, dilation, relu=True):
            super().__init__()
            self.add_module("conv", nn.Conv2d(cin, cout, k, stride, pad, dilation, bias=False))
            self.add_module("bn", nn.BatchNorm2d(cout, eps=1e-5, momentum=0.999))
            if relu:
                self.add_module("relu", nn.ReLU())

    class Bottleneck(nn.Module):
        def __init__(self, cin, cout, stride, dilation, downsample):
            super().__init__()
            mid = cout // 4
            self.reduce = ConvBnReLU(cin, mid, 1, stride, 0, 1)
            self.conv3x3 = ConvBnReLU(mid, mid, 3, 1, dilation, dilation)
            self.increase = ConvBnReLU(mid, cout, 1, 1, 0, 1, relu=False)
            self.shortcut = ConvBnReLU(cin, cout, 1, stride, 0, 1, relu=False) if downsample else nn.Identity()

        def forward(self, x):
            return torch.relu(self.increase(self.conv3x3(self.reduce(x))) + self.shortcut(x))

    def res_layer(n, cin, cout, stride, dilation):
        return nn.Sequential(*[Bottleneck(cin if i == 0 else cout, cout, stride if i == 0 else 1,
                                          dilation, i == 0) for i in range(n)])

    class ASPP(nn.Module):
        def __init__(self, cin, classes, rates):
            super().__init__()
            self.convs = nn.ModuleList([nn.Conv2d(cin, classes, 3, 1, r, r, bias=True) for r in rates])

        def forward(self, x):
            return sum(c(x) for c in self.convs)

    def resnet101_aspp(classes=21):
        return nn.Sequential(
            ConvBnReLU(3, 64, 7, 2, 3, 1), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
            res_layer(3, 64, 256, 1, 1), res_layer(4, 256, 512, 2, 1),
            res_layer(23, 512, 1024, 1, 2), res_layer(3, 1024, 2048, 1, 4),
            ASPP(2048, classes, (6, 12, 18, 24)))

    def vgg16_largefov(classes=21):
        layers, cin = [], 3
        for block, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
            dilation = 2 if block == 5 else 1
            for _ in range(convs):
                layers += [nn.Conv2d(cin, width, 3, 1, dilation, dilation), nn.ReLU()]
                cin = width
            layers.append(nn.MaxPool2d(3, 2 if block <= 3 else 1, 1))
        layers += [nn.Conv2d(512, 1024, 3, 1, 12, 12), nn.ReLU(), nn.Dropout(0.5),
                   nn.Conv2d(1024, 1024, 1), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(1024, classes, 1)]
        return nn.Sequential(*layers)

    return {"resnet101_aspp": resnet101_aspp, "vgg16_largefov": vgg16_largefov}


def _time_alternating(fns, runs, warmup):
    """{name: [seconds...]} timing each fn in turn, `runs` rounds after `warmup` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return times


def _tf_train_step(model, x, y):
    import keras

    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    return lambda: model.train_on_batch(x, y)


def _torch_train_step(net, x, y, freeze_bn):
    import torch

    net.train()
    if freeze_bn:  # deeplab-pytorch: BN in eval mode, its parameters not trained
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = net(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def vs_torch(runs, warmup, threads, measures):
    """Rows (measure, tf median s, torch median s, ratio) of the side-by-side runs."""
    import keras
    import torch

    torch.set_num_threads(threads)
    builders = torch_networks()
    rng = np.random.default_rng(0)
    rows = []
    for measure in measures:
        name, kind = MEASURES[measure]
        keras.backend.clear_session()
        batch, size = (1, 321) if kind == "forward" else (2, 321)
        x = rng.normal(0, 50, (batch, size, size, 3)).astype("float32")
        model = build_model(name, dropout=0.5)
        net = builders[name]()
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        if kind == "forward":
            forward = tf.function(lambda v: model(v, training=False), jit_compile=False)
            xtf = tf.constant(x)
            net.eval()

            def torch_forward():
                with torch.no_grad():
                    return net(xt).numpy()

            fns = {"tf": lambda: forward(xtf).numpy(), "torch": torch_forward}
        else:
            out = model(x[:1]).shape[1]
            y = rng.integers(0, 21, (batch, out, out)).astype("int32")
            fns = {"tf": _tf_train_step(model, x, y),
                   "torch": _torch_train_step(net, xt, torch.from_numpy(y.astype("int64")),
                                              freeze_bn=name == "resnet101_aspp")}
        times = _time_alternating(fns, runs, warmup)
        tf_s, torch_s = statistics.median(times["tf"]), statistics.median(times["torch"])
        tf_min, torch_min = min(times["tf"]), min(times["torch"])
        rows.append((measure, tf_s, torch_s, tf_s / torch_s, tf_min, torch_min, tf_min / torch_min))
        print(f"{measure:40s} median: tf {tf_s:7.3f} s  torch {torch_s:7.3f} s  ratio "
              f"{tf_s / torch_s:.2f} | min: tf {tf_min:.3f} torch {torch_min:.3f} ratio "
              f"{tf_min / torch_min:.2f}", flush=True)
        del model, net
    return rows


MEASURES = {
    "ResNet-101-ASPP forward 321x321": ("resnet101_aspp", "forward"),
    "ResNet-101-ASPP train step (batch 2, crop 321, frozen BN)": ("resnet101_aspp", "train"),
    "VGG16-LargeFOV train step (batch 2, crop 321)": ("vgg16_largefov", "train"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=available_models(), choices=available_models())
    parser.add_argument("--sizes", nargs="+", type=int, default=[321, 513])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", type=pathlib.Path, default=None, help="markdown file to write")
    parser.add_argument("--vs-torch", action="store_true",
                        help="time against deeplab-pytorch's networks in torch (see the docstring)")
    parser.add_argument("--measures", nargs="+", type=int, default=None,
                        help=f"with --vs-torch, which measures (1-based) of: {list(MEASURES)}")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="intra-op threads of both frameworks (default: all cores)")
    parser.add_argument("--inter-op-threads", type=int, default=0,
                        help="TF inter-op threads (0: TF's default)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or any(s < 1 for s in args.sizes) or args.threads < 1:
        parser.error(f"runs >= 1, warmup >= 0, sizes >= 1, threads >= 1. Received: {args.runs}, "
                     f"{args.warmup}, {args.sizes}, {args.threads}")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    if args.vs_torch:
        names = list(MEASURES)
        picked = [names[i - 1] for i in (args.measures or range(1, len(names) + 1))
                  if 1 <= i <= len(names)]
        load_before = os.getloadavg()
        rows = vs_torch(args.runs, args.warmup, args.threads, picked)
        load_after = os.getloadavg()
        print(f"CPU: {cpu_description()}, threads {args.threads}, load average (1 min) "
              f"before/after {load_before[0]:.1f} / {load_after[0]:.1f}")
        print("| measure | TF median (s) | torch median (s) | TF / torch | TF min (s) | torch min (s) | TF / torch (min) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for m, a, b, r, c, d, q in rows:
            print(f"| {m} | {a:.3f} | {b:.3f} | {r:.2f} | {c:.3f} | {d:.3f} | {q:.2f} |")
        return

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
            f"Machine: 2-core CPU, no GPU ({cpu_description()}), "
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
