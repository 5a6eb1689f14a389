"""An independent reference of the released DeepLab Caffe nets, and parity of the Keras models with it.

The reference is written from the prototxts (DESIGN.md Sec. 6), not from the
Keras code: each net is a list of Caffe layers (Convolution / Pooling /
BatchNorm / Scale / Eltwise ...) with the official names, and `run_net`
evaluates it in float64 with Caffe's layer semantics, implemented here:
pooling sizes ceil((n + 2p - k)/s) + 1 (minus one when the last window starts in
the padding), MAX over the window clipped to the image, AVE divided by the
window clipped to [-p, n + p), convolutions on (out, in, kh, kw) blobs,
BatchNorm (mean/f, var/f, eps 1e-5) then Scale. torch (a test-only extra) only
supplies the convolution and window-sum kernels.

Widths are reduced (1/16) where the layout allows; the layer names, blob
layouts, pads, strides and dilations are the released ones.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

WIDTH = 1 / 16
SIZES = [(321, 321), (513, 513), (375, 500)]


def w(c, mult):
    return max(1, int(round(c * mult)))


# --- the nets, from the prototxts --------------------------------------------------------------

def _conv(name, bottom, top, out, k, pad=0, stride=1, dilation=1, bias=True):
    return dict(name=name, type="Convolution", bottom=bottom, top=top, num_output=out, kernel=k,
                pad=pad, stride=stride, dilation=dilation, bias=bias)


def _relu(name, blob):
    return dict(name=name, type="ReLU", bottom=blob, top=blob)


def _pool(name, bottom, top, kind, k, s, p):
    return dict(name=name, type="Pooling", bottom=bottom, top=top, pool=kind, kernel=k, stride=s, pad=p)


def _vgg_backbone(mult):
    """DeepLab-LargeFOV test.prototxt conv1_1 .. pool5 (also the v2 VGG16 backbone)."""
    layers, bottom = [], "data"
    for b, (filters, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for i in range(1, n + 1):
            pad, hole = (2, 2) if b == 5 else (1, 1)
            layers += [_conv(f"conv{b}_{i}", bottom, f"conv{b}_{i}", w(filters, mult), 3, pad, 1, hole),
                       _relu(f"relu{b}_{i}", f"conv{b}_{i}")]
            bottom = f"conv{b}_{i}"
        stride = 2 if b <= 3 else 1
        layers.append(_pool(f"pool{b}", bottom, f"pool{b}", "MAX", 3, stride, 1))
        bottom = f"pool{b}"
    return layers


def vgg_largefov_net(classes=21, mult=WIDTH, head="fc8_voc12"):
    layers = _vgg_backbone(mult)
    layers += [
        _pool("pool5a", "pool5", "pool5a", "AVE", 3, 1, 1),
        _conv("fc6", "pool5a", "fc6", w(1024, mult), 3, 12, 1, 12), _relu("relu6", "fc6"),
        _conv("fc7", "fc6", "fc7", w(1024, mult), 1), _relu("relu7", "fc7"),
        _conv(head, "fc7", "logits", classes, 1),
    ]
    return layers


def vgg_aspp_l_net(classes=21, mult=WIDTH):
    layers = _vgg_backbone(mult)
    for k, rate in enumerate((6, 12, 18, 24), start=1):
        layers += [
            _conv(f"fc6_{k}", "pool5", f"fc6_{k}", w(1024, mult), 3, rate, 1, rate), _relu(f"relu6_{k}", f"fc6_{k}"),
            _conv(f"fc7_{k}", f"fc6_{k}", f"fc7_{k}", w(1024, mult), 1), _relu(f"relu7_{k}", f"fc7_{k}"),
            _conv(f"fc8_voc12_{k}", f"fc7_{k}", f"fc8_voc12_{k}", classes, 1),
        ]
    layers.append(dict(name="fc8_voc12", type="Eltwise", op="SUM",
                       bottom=[f"fc8_voc12_{k}" for k in range(1, 5)], top="logits"))
    return layers


def _bn_scale(conv, bottom_top):
    """BatchNorm + Scale after a conv: res2a_branch1 -> bn2a_branch1 / scale2a_branch1, conv1 -> bn_conv1."""
    suffix = conv[len("res"):] if conv.startswith("res") else "_" + conv
    return [dict(name=f"bn{suffix}", type="BatchNorm", bottom=bottom_top, top=bottom_top),
            dict(name=f"scale{suffix}", type="Scale", bottom=bottom_top, top=bottom_top)]


def caffe_block(stage, b):
    if b == 1:
        return f"{stage}a"
    if stage in (3, 4):
        return f"{stage}b{b - 1}"
    return f"{stage}{'abc'[b - 1]}"


def resnet101_net(classes=21, mult=WIDTH, head="fc1_voc12"):
    """DeepLab v2 ResNet-101 (deeplab-pytorch geometry: pool1 MAX k3 s2 p1 ceil), ASPP c0..c3."""
    layers = [_conv("conv1", "data", "conv1", w(64, mult), 7, 3, 2, bias=False)]
    layers += _bn_scale("conv1", "conv1") + [_relu("conv1_relu", "conv1"),
                                             _pool("pool1", "conv1", "pool1", "MAX", 3, 2, 1)]
    bottom = "pool1"
    for stage, (filters, blocks, stride, dil) in zip(
            (2, 3, 4, 5), ((64, 3, 1, 1), (128, 4, 2, 1), (256, 23, 1, 2), (512, 3, 1, 4))):
        for b in range(1, blocks + 1):
            name = caffe_block(stage, b)
            s = stride if b == 1 else 1
            if b == 1:
                br1 = f"res{name}_branch1"
                layers += [_conv(br1, bottom, br1, w(4 * filters, mult), 1, 0, s, bias=False)]
                layers += _bn_scale(br1, br1)
                shortcut = br1
            else:
                shortcut = bottom
            a, bb, c = (f"res{name}_branch2{x}" for x in "abc")
            layers += [_conv(a, bottom, a, w(filters, mult), 1, 0, s, bias=False)] + _bn_scale(a, a)
            layers += [_relu(f"{a}_relu", a)]
            layers += [_conv(bb, a, bb, w(filters, mult), 3, dil, 1, dil, bias=False)] + _bn_scale(bb, bb)
            layers += [_relu(f"{bb}_relu", bb)]
            layers += [_conv(c, bb, c, w(4 * filters, mult), 1, bias=False)] + _bn_scale(c, c)
            layers += [dict(name=f"res{name}", type="Eltwise", op="SUM", bottom=[shortcut, c], top=f"res{name}"),
                       _relu(f"res{name}_relu", f"res{name}")]
            bottom = f"res{name}"
    for k, rate in enumerate((6, 12, 18, 24)):
        layers.append(_conv(f"{head}_c{k}", bottom, f"{head}_c{k}", classes, 3, rate, 1, rate))
    layers.append(dict(name=head, type="Eltwise", op="SUM", bottom=[f"{head}_c{k}" for k in range(4)], top="logits"))
    return layers


# --- random blobs in the real layouts ----------------------------------------------------------

def random_blobs(net, seed=0, in_channels=3):
    """{layer name: [arrays]} in Caffe layouts: conv (out, in, kh, kw) [+ bias (out,)],
    BatchNorm (mean*f, var*f, [f]), Scale (gamma, beta)."""
    rng = np.random.default_rng(seed)
    channels, blobs = {"data": in_channels}, {}
    for layer in net:
        t = layer["type"]
        if t == "Convolution":
            cin, k, out = channels[layer["bottom"]], layer["kernel"], layer["num_output"]
            weight = rng.normal(0, math.sqrt(2.0 / (cin * k * k)), (out, cin, k, k)).astype(np.float32)
            blobs[layer["name"]] = [weight] + ([rng.normal(0, 0.1, out).astype(np.float32)] if layer["bias"] else [])
            channels[layer["top"]] = out
        elif t == "BatchNorm":
            c = channels[layer["bottom"]]
            f = np.float32(rng.uniform(500, 1000))
            blobs[layer["name"]] = [(rng.normal(0, 0.2, c) * f).astype(np.float32),
                                    (rng.uniform(0.5, 1.5, c) * f).astype(np.float32),
                                    np.array([f], np.float32)]
        elif t == "Scale":
            c = channels[layer["bottom"]]
            small = layer["name"].endswith("branch2c")  # keeps the residual sum's scale in check
            blobs[layer["name"]] = [rng.uniform(0.1, 0.3, c).astype(np.float32) if small
                                    else rng.uniform(0.5, 1.5, c).astype(np.float32),
                                    rng.normal(0, 0.1, c).astype(np.float32)]
        elif t in ("Pooling", "ReLU"):
            channels[layer["top"]] = channels[layer["bottom"]]
        elif t == "Eltwise":
            channels[layer["top"]] = channels[layer["bottom"][0]]
    return blobs


# --- Caffe layer semantics ---------------------------------------------------------------------

def caffe_pool_out(n, k, s, p):
    out = int(math.ceil((n + 2 * p - k) / s)) + 1
    if p > 0 and (out - 1) * s >= n + p:
        out -= 1
    return out


def caffe_pool(x, kind, k, s, p):
    _, _, h, wd = x.shape
    oh, ow = caffe_pool_out(h, k, s, p), caffe_pool_out(wd, k, s, p)
    extra_h, extra_w = (oh - 1) * s + k - p - h, (ow - 1) * s + k - p - wd
    if kind == "MAX":
        padded = F.pad(x, (p, max(extra_w, 0), p, max(extra_h, 0)), value=-math.inf)
        return F.max_pool2d(padded, k, s)[:, :, :oh, :ow]
    padded = F.pad(x, (p, max(extra_w, 0), p, max(extra_h, 0)), value=0.0)
    sums = F.avg_pool2d(padded, k, s, divisor_override=1)[:, :, :oh, :ow]

    def counts(n, o):  # Caffe: window [start, min(start + k, n + p)), start = i*s - p
        return np.array([min(i * s - p + k, n + p) - (i * s - p) for i in range(o)], np.float64)

    size = torch.from_numpy(np.outer(counts(h, oh), counts(wd, ow)))
    return sums / size


def run_net(net, blobs, image_nhwc, eps=1e-5):
    """Logits float64 [N, H', W', C] of the Caffe net on float images [N, H, W, 3]."""
    x = {"data": torch.from_numpy(np.asarray(image_nhwc, np.float64).transpose(0, 3, 1, 2).copy())}
    with torch.no_grad():
        for layer in net:
            t, name = layer["type"], layer["name"]
            if t == "Convolution":
                wb = [torch.from_numpy(b.astype(np.float64)) for b in blobs[name]]
                x[layer["top"]] = F.conv2d(x[layer["bottom"]], wb[0], wb[1] if len(wb) > 1 else None,
                                           stride=layer["stride"], padding=layer["pad"], dilation=layer["dilation"])
            elif t == "ReLU":
                x[layer["top"]] = torch.clamp(x[layer["bottom"]], min=0)
            elif t == "Pooling":
                x[layer["top"]] = caffe_pool(x[layer["bottom"]], layer["pool"], layer["kernel"],
                                             layer["stride"], layer["pad"])
            elif t == "BatchNorm":
                mean, var, f = (b.astype(np.float64) for b in blobs[name])
                scale = 0.0 if f[0] == 0 else 1.0 / f[0]
                m = torch.from_numpy(mean * scale)[None, :, None, None]
                v = torch.from_numpy(var * scale)[None, :, None, None]
                x[layer["top"]] = (x[layer["bottom"]] - m) / torch.sqrt(v + eps)
            elif t == "Scale":
                g, b = (torch.from_numpy(a.astype(np.float64))[None, :, None, None] for a in blobs[name])
                x[layer["top"]] = x[layer["bottom"]] * g + b
            elif t == "Eltwise":
                parts = [x[b] for b in layer["bottom"]]
                out = parts[0]
                for p in parts[1:]:
                    out = out + p if layer["op"] == "SUM" else torch.maximum(out, p)
                x[layer["top"]] = out
            else:
                raise AssertionError(f"reference has no layer type {t}")
    return x["logits"].numpy().transpose(0, 2, 3, 1)


def resize_align_corners(x, size):
    """Caffe Interp: bilinear with aligned corners, x float [N, H, W, C] -> float64 [N, oh, ow, C]."""
    x = np.asarray(x, np.float64)
    _, h, w, _ = x.shape

    def coords(n, o):
        if o == 1:
            return np.zeros(1), np.zeros(1, int), np.zeros(1, int)
        pos = np.arange(o) * (n - 1) / (o - 1)
        lo = np.floor(pos).astype(int)
        return pos - lo, lo, np.minimum(lo + 1, n - 1)

    fy, y0, y1 = coords(h, size[0])
    fx, x0, x1 = coords(w, size[1])
    fx = fx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bot = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    fy = fy[None, :, None, None]
    return top * (1 - fy) + bot * fy


def caffe_msc_size(n, scale):
    """The MSC prototxt's Interp sizes: shrink 2 for 0.5; shrink 4 then zoom 3 for 0.75."""
    if scale == 0.5:
        return (n - 1) // 2 + 1
    if scale == 0.75:
        m = (n - 1) // 4 + 1
        return m + (m - 1) * 2
    assert scale == 1.0
    return n


def caffe_msc(net, blobs, x):
    """Released MSC net: Interp inputs, the shared net, Interp score maps to scale 1, Eltwise MAX."""
    ref = run_net(net, blobs, x)
    maps = [ref]
    for s in (0.75, 0.5):
        size = (caffe_msc_size(x.shape[1], s), caffe_msc_size(x.shape[2], s))
        logits = run_net(net, blobs, resize_align_corners(x, size))
        maps.append(resize_align_corners(logits, ref.shape[1:3]))
    return np.max(maps, axis=0)


def caffe_tensors(blobs):
    """{"layer/i": array}: the flat form the converter reads a caffemodel into."""
    return {f"{name}/{i}": b for name, arrays in blobs.items() for i, b in enumerate(arrays)}


def images(hw, seed=1):
    return np.random.default_rng(seed).normal(0, 50, (1, *hw, 3)).astype(np.float32)


def assert_parity(keras_logits, ref_logits):
    keras_logits = np.asarray(keras_logits)
    assert keras_logits.shape == ref_logits.shape
    scale = np.abs(ref_logits).max()
    err = np.abs(keras_logits - ref_logits).max()
    assert err <= 1e-4 * scale, f"max |dlogit| {err:.3g} > 1e-4 of the logit scale {scale:.3g}"
    agree = (keras_logits.argmax(-1) == ref_logits.argmax(-1)).mean()
    assert agree >= 0.999, f"argmax agreement {agree:.5f}"


NETS = {
    "vgg16_largefov": vgg_largefov_net,
    "vgg16_aspp_l": vgg_aspp_l_net,
    "resnet101_aspp": resnet101_net,
}


@pytest.fixture(scope="module")
def converted():
    """Keras models (width 1/16) given the random Caffe blobs through the converter's mapping."""
    import keras

    from deeplab_keras.convert.mapping import plan_weights
    from deeplab_keras.models import build_model

    out = {}
    for name, make in NETS.items():
        net = make()
        blobs = random_blobs(net, seed=len(name))
        keras.utils.set_random_seed(0)
        model = build_model(name, width_multiplier=WIDTH)
        plan = plan_weights(model, caffe_tensors(blobs), "caffe", "test blobs")
        assert not plan.leftovers and not plan.reinitialised
        for layer, arrays in plan.assign:
            layer.set_weights(arrays)
        out[name] = (model, net, blobs)
    return out


@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("name", list(NETS))
def test_keras_network_matches_the_caffe_reference(converted, name, hw):
    model, net, blobs = converted[name]
    x = images(hw)
    ref = run_net(net, blobs, x)
    assert_parity(model(x), ref)


def test_reference_sizes_are_the_caffe_ones():
    """375x500: LargeFOV logits 48x64 (the figure from the released net), ResNet 48x63."""
    net = vgg_largefov_net(mult=1 / 64)
    assert run_net(net, random_blobs(net), images((375, 500))).shape[1:3] == (48, 64)
    assert caffe_pool_out(6, 3, 2, 1) == 4 and caffe_pool_out(7, 3, 2, 1) == 4
    # AVE k3 s1 p1 divides by 9 everywhere (the window includes the padding).
    ones = torch.ones(1, 1, 3, 4, dtype=torch.float64)
    np.testing.assert_allclose(caffe_pool(ones, "AVE", 3, 1, 1)[0, 0, 0, 0].item(), 4 / 9)


@pytest.mark.parametrize("hw", [(95, 130)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_msc_with_caffe_interp_matches_the_released_msc_net(converted, hw):
    """wrap_msc(caffe_interp=True): Interp sizes (95 -> 70 / 48 where ceil(H*s) gives 72 / 48) and
    aligned corners, max fusion."""
    from deeplab_keras.models import wrap_msc

    model, net, blobs = converted["resnet101_aspp"]
    x = images(hw, seed=3)
    assert_parity(wrap_msc(model, caffe_interp=True)(x), caffe_msc(net, blobs, x))
