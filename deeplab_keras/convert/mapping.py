"""Name and layout mapping from released DeepLab weights (Caffe, deeplab-pytorch) to Keras.

Source tensors are a flat dict {key: float32 array}: "layer/blob_index" for a
caffemodel ("conv1_1/0", "bn_conv1/2"), the state-dict key for a .pth
("base.layer1.conv1.conv.weight"). `plan_weights` assigns to every weighted
Keras layer exactly the source tensors that belong to it, by name, and checks
every shape; the first Keras layer that has no source, or whose shapes differ,
raises a ValueError naming it. Every source tensor is either used or listed in
the returned report (MSC copies `*_res075` / `*_res05` are checked equal to the
tensor they share and skipped).

Caffe layout: conv weights (out, in, kh, kw) -> Keras (kh, kw, in, out) by
transpose (2, 3, 1, 0); BatchNorm blobs (mean*f, var*f, [f]) -> mean / f and
var / f (f = 0 -> 0), gamma and beta from the following Scale layer. Caffe's
ResNet convs have no bias: the Keras (keras.applications-style) conv bias is
set to zero, which computes exactly the Caffe net.
"""

import dataclasses
import re

import numpy as np

_MSC_COPY = re.compile(r"_res0(?:75|5)(?=[_/]|$)")
_VGG_CONV = re.compile(r"^block(\d)_conv(\d)$")
_RES_CONV = re.compile(r"^conv(\d)_block(\d+)_(\d)_(conv|bn)$")
_ASPP = re.compile(r"^aspp_(\d)$")
_VGG_HEAD = re.compile(r"^(fc6|fc7|fc8)(?:_(\d))?$")
_BRANCH = {"0": "branch1", "1": "branch2a", "2": "branch2b", "3": "branch2c"}
_PTH_BRANCH = {"0": "shortcut", "1": "reduce", "2": "conv3x3", "3": "increase"}


@dataclasses.dataclass
class Plan:
    """What `plan_weights` decided.

    Attributes:
      assign: [(keras layer, [arrays])], in model order.
      mapped: [(keras layer name, [source keys])].
      reinitialised: Keras classifier layers left at their fresh initialisation.
      zero_bias: Keras conv layers whose bias was set to zero (no source bias).
      msc_copies: source keys skipped as verified MSC copies.
      leftovers: source keys neither used nor an MSC copy.
      source_classes: class count of the source classifier (None if it has none).
    """

    assign: list
    mapped: list
    reinitialised: list
    zero_bias: list
    msc_copies: list
    leftovers: list
    source_classes: int = None


def caffe_block_name(stage, block):
    """Caffe ResNet-101 block name: res2a..2c, res3a, res3b1..b3, res4a, res4b1..b22, res5a..5c."""
    if block == 1:
        return f"res{stage}a"
    if stage in (3, 4):
        return f"res{stage}b{block - 1}"
    return f"res{stage}{'abcdefghijklmnopqrstuvwxyz'[block - 1]}"


def _conv_kernel(w):
    w = np.asarray(w, np.float32)
    if w.ndim != 4:
        raise ValueError(f"expected a 4-d (out, in, kh, kw) conv weight, got shape {w.shape}")
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _vector(v):
    v = np.asarray(v, np.float32)
    if sum(d != 1 for d in v.shape) > 1:
        raise ValueError(f"expected a vector (legacy 1x1x1xN allowed), got shape {v.shape}")
    return v.reshape(-1)


def _bn_stats(mean, var, factor):
    f = float(_vector(factor)[0]) if factor is not None else 1.0
    scale = 0.0 if f == 0 else 1.0 / f
    return _vector(mean) * scale, _vector(var) * scale


class _Source:
    """The source tensors, with use tracking."""

    def __init__(self, tensors, what):
        self.tensors, self.what, self.used = tensors, what, set()

    def has(self, key):
        return key in self.tensors

    def take(self, key):
        self.used.add(key)
        return self.tensors[key]


def _caffe_keys_for(layer_name, src, classifier):
    """[(caffe layer names, builder)] for one Keras layer; builder(get) -> arrays."""
    m = _VGG_CONV.match(layer_name)
    if m:
        caffe = f"conv{m.group(1)}_{m.group(2)}"
        return caffe, lambda get: [_conv_kernel(get(f"{caffe}/0")), _vector(get(f"{caffe}/1"))]
    m = _VGG_HEAD.match(layer_name)
    if m:
        kind, branch = m.groups()
        if kind == "fc8":
            caffe = classifier.get(branch)
            if caffe is None:
                return f"fc8{'' if branch is None else f'_*_{branch}'}", None
        else:
            caffe = kind if branch is None else f"{kind}_{branch}"
            if branch is not None and not src.has(f"{caffe}/0") and src.has(f"{kind}/0"):
                caffe = kind  # a LargeFOV / vgg16_20M fc6/fc7 initialises every ASPP branch
        return caffe, lambda get: [_conv_kernel(get(f"{caffe}/0")), _vector(get(f"{caffe}/1"))]
    m = _ASPP.match(layer_name)
    if m:
        caffe = classifier.get(str(int(m.group(1)) - 1))
        if caffe is None:
            return f"fc1_*_c{int(m.group(1)) - 1}", None
        return caffe, lambda get: [_conv_kernel(get(f"{caffe}/0")), _vector(get(f"{caffe}/1"))]
    if layer_name in ("conv1_conv", "conv1_bn"):
        conv, bn, scale = "conv1", "bn_conv1", "scale_conv1"
        kind = layer_name.split("_")[1]
    else:
        m = _RES_CONV.match(layer_name)
        if not m:
            return None, None
        stage, block, branch, kind = m.groups()
        base = caffe_block_name(int(stage), int(block))
        suffix = f"{base[3:]}_{_BRANCH[branch]}"
        conv, bn, scale = f"res{suffix}", f"bn{suffix}", f"scale{suffix}"
    if kind == "conv":
        return conv, lambda get: [_conv_kernel(get(f"{conv}/0"))] + (
            [_vector(get(f"{conv}/1"))] if src.has(f"{conv}/1") else [None])

    def build_bn(get):
        factor = get(f"{bn}/2") if src.has(f"{bn}/2") else None
        mean, var = _bn_stats(get(f"{bn}/0"), get(f"{bn}/1"), factor)
        return [_vector(get(f"{scale}/0")), _vector(get(f"{scale}/1")), mean, var]

    return f"{bn}+{scale}", build_bn


def _pth_keys_for(layer_name, src, prefix):
    if layer_name in ("conv1_conv", "conv1_bn"):
        base = f"{prefix}layer1.conv1"
        kind = layer_name.split("_")[1]
    else:
        m = _RES_CONV.match(layer_name)
        a = _ASPP.match(layer_name)
        if a:
            key = f"{prefix}aspp.c{int(a.group(1)) - 1}"
            return key, lambda get: [_conv_kernel(get(f"{key}.weight")), _vector(get(f"{key}.bias"))]
        if not m:
            return None, None
        stage, block, branch, kind = m.groups()
        base = f"{prefix}layer{stage}.block{block}.{_PTH_BRANCH[branch]}"
    if kind == "conv":
        return f"{base}.conv", lambda get: [_conv_kernel(get(f"{base}.conv.weight")), None]

    def build_bn(get):
        if src.has(f"{base}.bn.num_batches_tracked"):
            get(f"{base}.bn.num_batches_tracked")  # a counter, not a weight
        return [_vector(get(f"{base}.bn.{k}")) for k in ("weight", "bias", "running_mean", "running_var")]

    return f"{base}.bn", build_bn


def find_classifier(names, kind):
    """{branch: caffe layer} of the classifier in a caffemodel's layer names.

    kind "fc8": LargeFOV `fc8_<set>` (branch None) or ASPP `fc8_<set>_k` (branch "k");
    kind "fc1": ResNet `fc1_<set>_c0..c3` (branch "0".."3"). MSC copies are ignored.
    """
    out = {}
    for name in names:
        if _MSC_COPY.search(name):
            continue
        if kind == "fc8":
            m = re.match(r"^fc8(?:_[A-Za-z][A-Za-z0-9]*)?(?:_(\d))?$", name)
        else:
            m = re.match(r"^fc1_[A-Za-z0-9]+_c(\d)$", name)
        if m:
            branch = m.group(1)
            if branch in out:
                raise ValueError(f"two classifier layers for one branch: {out[branch]!r} and {name!r}")
            out[branch] = name
    return out


def plan_weights(model, tensors, source_format, what, reinit_classifier=False, backbone_only=False):
    """Assigns source tensors to every weighted layer of a DeepLab Keras model.

    Args:
      model: a single-scale model from `build_model`.
      tensors: {key: array} ("layer/i" for Caffe, state-dict keys for .pth).
      source_format: "caffe" or "pth".
      what: the file, for messages.
      reinit_classifier: leave the classifier (fc8* / aspp_*) at its fresh
        initialisation (a different class count).
      backbone_only: map only backbone layers (and VGG fc6/fc7 when the source
        has them); the rest keeps its initialisation.

    Returns:
      `Plan`.

    Raises:
      ValueError naming `what` and the first Keras layer without a matching source.
    """
    src = _Source(tensors, what)
    prefix = ""
    if source_format == "pth":
        heads = {k.split(".")[0] for k in tensors}
        if "module" in heads:
            prefix = "module."
            heads = {k.split(".")[1] for k in tensors if k.startswith("module.")}
        if "base" in heads:
            prefix += "base."
    layer_names = sorted({k.rsplit("/", 1)[0] for k in tensors}) if source_format == "caffe" else []
    classifier = {}
    if source_format == "caffe":
        classifier = find_classifier(layer_names, "fc1" if any(
            _ASPP.match(l.name) for l in model.layers) else "fc8")

    plan = Plan([], [], [], [], [], [])
    for layer in model.layers:
        if not layer.weights:
            continue
        is_classifier = layer.name.startswith("fc8") or layer.name.startswith("aspp_")
        if is_classifier and (reinit_classifier or backbone_only):
            plan.reinitialised.append(layer.name)
            continue
        if source_format == "caffe":
            caffe, build = _caffe_keys_for(layer.name, src, classifier)
        else:
            caffe, build = _pth_keys_for(layer.name, src, prefix)
        if caffe is None:
            raise ValueError(f"{what}: no mapping for Keras layer {layer.name!r} (not a DeepLab model?)")
        if backbone_only and layer.name.startswith(("fc6", "fc7")) and build is not None:
            try:
                build(lambda key: src.tensors[key])
            except KeyError:
                plan.reinitialised.append(layer.name)
                continue
        before = set(src.used)

        def get(key, _layer=layer, _caffe=caffe):
            if key not in src.tensors:
                raise ValueError(
                    f"{what} does not match the Keras model: layer {_layer.name!r} needs source "
                    f"{key.rsplit('/', 1)[0] if source_format == 'caffe' else key!r}, which the file "
                    f"does not have (expected source layer {_caffe!r})."
                )
            return src.take(key)

        if build is None:
            raise ValueError(
                f"{what} does not match the Keras model: layer {layer.name!r} needs source "
                f"layer {caffe!r}, which the file does not have."
            )
        try:
            arrays = build(get)
        except ValueError as err:
            if what in str(err):
                raise
            raise ValueError(f"{what}: source {caffe!r} for Keras layer {layer.name!r}: {err}") from None
        want = [tuple(w.shape) for w in layer.weights]
        if len(arrays) == 2 and arrays[1] is None:
            arrays[1] = np.zeros(arrays[0].shape[-1:], np.float32)  # Caffe bias_term: false
            plan.zero_bias.append(layer.name)
        got = [tuple(a.shape) for a in arrays]
        if got != want:
            if is_classifier and len(got) == len(want) and got[0][:-1] == want[0][:-1]:
                raise ValueError(
                    f"{what}: classifier {caffe!r} has {got[0][-1]} classes, the Keras model "
                    f"{want[0][-1]} (layer {layer.name!r}); pass --num-classes {got[0][-1]} to keep "
                    f"it, or another count to re-initialise it."
                )
            raise ValueError(
                f"{what} does not match the Keras model at layer {layer.name!r} (source {caffe!r}): "
                f"Keras expects shapes {want}, the source has {got}."
            )
        plan.assign.append((layer, arrays))
        plan.mapped.append((layer.name, sorted(src.used - before)))

    for key in tensors:
        if key in src.used:
            continue
        if source_format == "caffe" and _MSC_COPY.search(key):
            main = _MSC_COPY.sub("", key, count=1)
            if main in tensors and np.array_equal(tensors[main], tensors[key]):
                plan.msc_copies.append(key)
                continue
            if main in tensors:
                raise ValueError(
                    f"{what}: MSC copy {key.rsplit('/', 1)[0]!r} differs from the layer it shares "
                    f"({main.rsplit('/', 1)[0]!r}); the MSC branches must share their weights."
                )
        plan.leftovers.append(key)
    cls = [a for layer, a in plan.assign if layer.name.startswith(("fc8", "aspp_"))]
    plan.source_classes = cls[0][0].shape[-1] if cls else None
    return plan


def source_classes(tensors, source_format, backbone):
    """Class count of the source classifier, or None when it has none."""
    if source_format == "pth":
        for key in tensors:
            if key.endswith("aspp.c0.weight"):
                return int(tensors[key].shape[0])
        return None
    names = sorted({k.rsplit("/", 1)[0] for k in tensors})
    found = find_classifier(names, "fc1" if backbone == "resnet101" else "fc8")
    if not found:
        return None
    first = found[sorted(found, key=str)[0]]
    return int(np.asarray(tensors[f"{first}/0"]).shape[0])


def guess_model(tensors, source_format):
    """The `build_model` name of a source, from its layer names.

    "resnet101_aspp" for ResNet (conv1 + bn_conv1, or a deeplab-pytorch state
    dict), "vgg16_aspp_l" for fc6_1..fc6_4 (the released ASPP model; ASPP-S has
    the same weights and differs only in rates: pass --model vgg16_aspp_s),
    "vgg16_largefov" for conv1_1..conv5_3 (+ fc6, fc7).

    Raises:
      ValueError: the names fit none of them.
    """
    if source_format == "pth":
        if any(k.endswith("layer1.conv1.conv.weight") for k in tensors):
            return "resnet101_aspp"
        raise ValueError("no deeplab-pytorch ResNet-101 keys (…layer1.conv1.conv.weight) in the state dict")
    names = {k.rsplit("/", 1)[0] for k in tensors}
    if "bn_conv1" in names or "res2a_branch2a" in names:
        return "resnet101_aspp"
    if all(f"fc6_{k}" in names for k in range(1, 5)):
        return "vgg16_aspp_l"
    if "conv1_1" in names and "conv5_3" in names:
        return "vgg16_largefov"
    raise ValueError(
        "the layer names fit no DeepLab model (expected conv1_1..conv5_3 for VGG16 or "
        f"conv1/bn_conv1/res2a_branch2a for ResNet-101); first layers: {sorted(names)[:5]}"
    )
