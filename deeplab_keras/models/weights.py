"""ImageNet initialisation of the DeepLab backbones, checked layer by layer.

Sources (`backbone_weights=`):
- "imagenet": the keras.applications VGG16 (with its fc layers, 528 MB) or
  ResNet101 (no top) ImageNet weights, downloaded by Keras into ~/.keras/models.
- a path to a weights file of `keras.applications.VGG16` / `ResNet101` (built
  with `include_top=True` or `False`):
  * legacy HDF5 (`.h5`): the files Keras downloads, `save_weights` of Keras 2,
    or `model.save("x.h5")`; read by layer name;
  * Keras 3 `.weights.h5` (`model.save_weights`): stored by position, not by
    name, so the matching keras.applications model is rebuilt and loaded, and
    its layers are then read by name.

- a converted / trained DeepLab `.keras` model: its backbone (and VGG fc6/fc7)
  initialises this model, by name and shape; the classifier keeps its fresh
  initialisation.
- a released DeepLab file (`.caffemodel`, deeplab-pytorch `.pth`), the same way.
  This is how DeepLab v2 fine-tunes from the MS-COCO `init.caffemodel` (91
  classes) to VOC (21): `backbone_weights="init.caffemodel"`;
  `vgg16_20M.caffemodel` (fc6/fc7 already decimated) works the same way. Those
  formats are known one layer up, in `deeplab_keras.convert`, which registers
  its reader here (`register_backbone_reader`) when it is imported, and
  `import deeplab_keras` imports it: this module never imports the converter
  (docs/ARCHITECTURE.md: imports run one way, and the models sit below it).

Every weighted backbone layer of the DeepLab model must find a source layer of
the same name with the same number and shapes of arrays; the first that does not
raises a ValueError naming it. Nothing is loaded unless all layers match.

VGG16 fc6/fc7 (DeepLab v1, ICLR 2015, Sec. 4.1): when the source has the
classifier top, ImageNet fc1 (25088 x 4096 = 7x7x512 x 4096) and fc2
(4096 x 4096) initialise fc6 (3x3x512 x 1024) and fc7 (1x1x1024 x 1024) by
decimation: every 3rd spatial tap (rows/cols 0, 3, 6) and every 4th filter
(0, 4, ..., 4092) of fc1; every 4th input and output channel of fc2; every 4th
bias. Every ASPP branch (fc6_k/fc7_k) starts from the same decimated weights.
Without the top, fc6/fc7 keep their random initialisation and a warning says so.
fc8 and the ResNet ASPP convs are always newly initialised.
"""

import os
import pathlib
import tempfile
import warnings

import numpy as np

HEAD_PREFIXES = ("fc6", "fc7", "fc8", "aspp_")

# The released formats (.caffemodel, deeplab-pytorch .pth / .pt): only for the error
# message when their reader is not registered.
_RELEASED_SUFFIXES = (".caffemodel", ".pth", ".pt")

# {lower-case file suffix: loader(model, source) -> loaded layer names}:
# weights formats known by the layers above (the converter's .caffemodel / .pth).
_BACKBONE_READERS = {}


def register_backbone_reader(suffixes, loader):
    """Lets a layer above the models read `backbone_weights` files of its formats.

    Args:
      suffixes: file name endings, e.g. (".caffemodel", ".pth", ".pt").
      loader: `loader(model, source) -> list of layer names` that loads the
        backbone (+ VGG fc6/fc7) of `source` into `model` and leaves the
        classifier as it is; it raises ValueError naming the first mismatch.
    """
    for suffix in suffixes:
        _BACKBONE_READERS[suffix.lower()] = loader


def _registered_reader(source):
    name = str(source).lower()
    for suffix, loader in _BACKBONE_READERS.items():
        if name.endswith(suffix):
            return loader
    return None

# Decimation of the ImageNet fc layers into fc6/fc7 (DeepLab v1, Sec. 4.1).
FC6_TAP_STEP = 3  # 7x7 -> 3x3
FC_FILTER_STEP = 4  # 4096 -> 1024


def decimate_vgg_fc(fc1_kernel, fc1_bias, fc2_kernel, fc2_bias):
    """ImageNet VGG16 fc1/fc2 -> DeepLab fc6 (3x3 conv) / fc7 (1x1 conv) by subsampling.

    Args:
      fc1_kernel: float32 [25088, 4096] (Keras Dense over the flattened 7x7x512 pool5).
      fc1_bias: float32 [4096].
      fc2_kernel: float32 [4096, 4096].
      fc2_bias: float32 [4096].

    Returns:
      (fc6_kernel [3, 3, 512, 1024], fc6_bias [1024], fc7_kernel [1, 1, 1024, 1024],
      fc7_bias [1024]), float32.

    Example:
      >>> k6, b6, k7, b7 = decimate_vgg_fc(np.zeros((25088, 4096)), np.zeros(4096),
      ...                                  np.zeros((4096, 4096)), np.zeros(4096))
      >>> k6.shape, k7.shape
      ((3, 3, 512, 1024), (1, 1, 1024, 1024))
    """
    expected = {"fc1 kernel": ((25088, 4096), fc1_kernel), "fc1 bias": ((4096,), fc1_bias),
                "fc2 kernel": ((4096, 4096), fc2_kernel), "fc2 bias": ((4096,), fc2_bias)}
    for what, (shape, array) in expected.items():
        if tuple(np.shape(array)) != shape:
            raise ValueError(
                f"VGG16 {what} must have shape {shape} to be decimated into fc6/fc7. "
                f"Received: shape={tuple(np.shape(array))}"
            )
    # Flatten() in keras.applications.VGG16 runs over NHWC pool5: (h, w, c) order.
    k6 = np.asarray(fc1_kernel, np.float32).reshape(7, 7, 512, 4096)
    k6 = k6[::FC6_TAP_STEP, ::FC6_TAP_STEP, :, ::FC_FILTER_STEP]
    b6 = np.asarray(fc1_bias, np.float32)[::FC_FILTER_STEP]
    k7 = np.asarray(fc2_kernel, np.float32)[::FC_FILTER_STEP, ::FC_FILTER_STEP]
    b7 = np.asarray(fc2_bias, np.float32)[::FC_FILTER_STEP]
    return np.ascontiguousarray(k6), b6, k7.reshape(1, 1, 1024, 1024), b7


def _is_head(name):
    return name.startswith(HEAD_PREFIXES)


def backbone_layers(model):
    """Layers of a DeepLab model that carry backbone (ImageNet) weights, in model order."""
    return [l for l in model.layers if l.weights and not _is_head(l.name)]


def _harvest(model):
    """{layer name: [arrays]} of every weighted layer of a Keras model."""
    return {l.name: [np.asarray(w) for w in l.get_weights()] for l in model.layers if l.weights}


def _applications_model(backbone, include_top, classes=1000, weights=None):
    import keras

    if backbone == "vgg16":
        return keras.applications.VGG16(include_top=include_top, weights=weights, classes=classes)
    return keras.applications.ResNet101(include_top=include_top, weights=weights, classes=classes)


def _read_legacy_h5(f):
    """Legacy Keras HDF5 weights (root or `model_weights` group): read by layer name."""
    group = f["model_weights"] if "model_weights" in f else f
    out = {}
    for raw in group.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        layer = group[name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in layer.attrs["weight_names"]]
        if names:
            out[name] = [np.asarray(layer[n]) for n in names]
    return out


def _read_keras3_weights(path, f, backbone):
    """Keras 3 `.weights.h5`: rebuild the keras.applications model and load it."""
    kernels_2d = {}

    def collect(path, obj):  # must return None, or h5py stops visiting
        if getattr(obj, "ndim", 0) == 2:
            kernels_2d[path] = obj.shape

    f.visititems(collect)
    include_top = bool(kernels_2d)
    # Dense layers are stored as dense, dense_1, ...: the classifier is the last one.
    def order(path):
        layer = path.split("/")[1]
        return int(layer.rsplit("_", 1)[1]) if "_" in layer and layer.rsplit("_", 1)[1].isdigit() else 0
    classes = kernels_2d[max(kernels_2d, key=order)][1] if include_top else 1000
    model = _applications_model(backbone, include_top, classes=classes)
    with tempfile.TemporaryDirectory() as tmp:
        link = path
        if not str(path).endswith(".weights.h5"):  # Keras insists on the suffix
            link = pathlib.Path(tmp) / "source.weights.h5"
            os.symlink(os.path.abspath(path), link)
        try:
            with warnings.catch_warnings():
                # Keras 3.15 warns about its internal '_operations_by_depth' container
                # for every functional model; the layer weights themselves do load
                # (tests/test_models_weights.py compares every array).
                warnings.filterwarnings("ignore", message="Skipping nested container")
                model.load_weights(str(link))
        except Exception as err:  # Keras raises ValueError/KeyError/... on a mismatch
            raise ValueError(
                f"Weights file {str(path)!r} is not a keras.applications "
                f"{'VGG16' if backbone == 'vgg16' else 'ResNet101'} "
                f"(include_top={include_top}) weights file: {err}"
            ) from err
    return _harvest(model)


def read_source_weights(source, backbone):
    """{layer name: [arrays]} from "imagenet" or a weights file path.

    Args:
      source: "imagenet" or a path (str / os.PathLike) to a .h5 / .weights.h5 file.
      backbone: "vgg16" or "resnet101".

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: the file is not a readable Keras weights file.
    """
    if isinstance(source, str) and source == "imagenet":
        # VGG16 needs its fc layers for the fc6/fc7 decimation.
        return _harvest(_applications_model(backbone, include_top=backbone == "vgg16", weights="imagenet"))
    import h5py

    path = pathlib.Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Backbone weights file not found. Received: backbone_weights={str(source)!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"Backbone weights file is not an HDF5 file. Received: backbone_weights={str(source)!r}"
        ) from err
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in group.attrs:
            return _read_legacy_h5(f)
        if "layers" in f:
            return _read_keras3_weights(path, f, backbone)
    raise ValueError(
        "Backbone weights file is neither a legacy Keras .h5 nor a Keras 3 .weights.h5 "
        f"file. Received: backbone_weights={str(source)!r}"
    )


def load_backbone_weights(model, source, backbone):
    """Copies ImageNet (or file) weights into the backbone (and VGG fc6/fc7) of `model`.

    Args:
      model: a DeepLab model from `build_model` (width_multiplier 1).
      source: "imagenet", a path to a keras.applications weights file or a
        DeepLab .keras model, or a file of a registered reader (.caffemodel / .pth).
      backbone: "vgg16" or "resnet101".

    Returns:
      list of the layer names that received weights (backbone layers, then fc6/fc7).

    Raises:
      ValueError: naming the first backbone layer missing from the source or
        whose array shapes differ; nothing is loaded in that case.
    """
    reader = _registered_reader(source)
    if reader is not None:
        return reader(model, source)
    if str(source).lower().endswith(_RELEASED_SUFFIXES):
        raise ValueError(
            f"{str(source)!r} is a released DeepLab file, read by deeplab_keras.convert, which "
            "registers its reader when imported (`import deeplab_keras` does it). "
            f"Received: backbone_weights={str(source)!r}")
    if str(source).lower().endswith(".keras"):
        return _load_keras_backbone(model, source)
    weights = read_source_weights(source, backbone)
    where = "ImageNet" if source == "imagenet" else repr(str(source))
    plan = []
    for layer in backbone_layers(model):
        src = weights.get(layer.name)
        want = [tuple(w.shape) for w in layer.weights]
        if src is None:
            raise ValueError(
                f"Backbone layer {layer.name!r} has no weights in {where} "
                f"(expected arrays of shapes {want})."
            )
        got = [tuple(a.shape) for a in src]
        if got != want:
            raise ValueError(
                f"Backbone layer {layer.name!r} does not match {where}: "
                f"expected arrays of shapes {want}, the source has {got}."
            )
        plan.append((layer, src))

    if backbone == "vgg16":
        fc_layers = [l for l in model.layers if l.name.startswith(("fc6", "fc7"))]
        if "fc1" in weights and "fc2" in weights:
            k6, b6, k7, b7 = decimate_vgg_fc(*weights["fc1"], *weights["fc2"])
            for layer in fc_layers:
                arrays = [k6, b6] if layer.name.startswith("fc6") else [k7, b7]
                want = [tuple(w.shape) for w in layer.weights]
                if [a.shape for a in arrays] != want:
                    raise ValueError(
                        f"Layer {layer.name!r} expects shapes {want}; the decimated ImageNet "
                        f"fc weights have {[a.shape for a in arrays]}."
                    )
                plan.append((layer, arrays))
        else:
            warnings.warn(
                f"{where} has no VGG16 fc1/fc2 (saved with include_top=False): "
                f"fc6/fc7 keep their random initialisation.",
                stacklevel=3,
            )

    for layer, arrays in plan:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in plan]


def _load_keras_backbone(model, source):
    """Backbone (+ VGG fc6/fc7) of a DeepLab .keras model (e.g. a converted release), by name."""
    import keras

    path = pathlib.Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Backbone weights file not found. Received: backbone_weights={str(source)!r}")
    try:
        src = keras.models.load_model(path, compile=False)
    except Exception as err:
        raise ValueError(f"{str(source)!r} is not a loadable .keras model: {err}") from err
    inner = [l for l in src.layers if isinstance(l, keras.Model)]
    src = inner[0] if len(inner) == 1 else src  # an MSC wrapper holds the shared network
    weights = _harvest(src)
    plan = []
    for layer in model.layers:
        if not layer.weights or layer.name.startswith(("fc8", "aspp_")):
            continue
        arrays = weights.get(layer.name)
        if arrays is None and layer.name.startswith(("fc6_", "fc7_")):
            arrays = weights.get(layer.name.split("_")[0])  # LargeFOV fc6/fc7 -> every ASPP branch
        want = [tuple(w.shape) for w in layer.weights]
        if arrays is None:
            raise ValueError(f"Layer {layer.name!r} has no weights in {str(source)!r} (expected shapes {want}).")
        if [tuple(a.shape) for a in arrays] != want:
            raise ValueError(
                f"Layer {layer.name!r} does not match {str(source)!r}: expected shapes {want}, "
                f"the source has {[tuple(a.shape) for a in arrays]}."
            )
        plan.append((layer, arrays))
    for layer, arrays in plan:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in plan]
