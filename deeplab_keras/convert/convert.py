"""Released DeepLab weights (.caffemodel, deeplab-pytorch .pth) -> a Keras DeepLab model."""

import dataclasses
import pathlib

from deeplab_keras.convert import mapping
from deeplab_keras.convert.caffemodel import read_caffemodel
from deeplab_keras.convert.pth import read_pth
from deeplab_keras.utils.atomic import atomic_save

_CAFFE_SUFFIXES = (".caffemodel",)
_PTH_SUFFIXES = (".pth", ".pt", ".pth.tar")


@dataclasses.dataclass
class Conversion:
    """A converted model and what the conversion did (see `mapping.Plan`)."""

    model: object
    model_name: str
    num_classes: int
    source_classes: int
    plan: mapping.Plan
    source_format: str

    def summary(self):
        """Human-readable report: mapped layers, class count, re-initialised layers, leftovers."""
        p = self.plan
        lines = [f"model: {self.model_name} ({self.source_format} source), {len(p.mapped)} Keras layers mapped"]
        for keras_name, keys in p.mapped:
            lines.append(f"  {keras_name} <- {', '.join(keys)}")
        lines.append(f"classes: {self.num_classes} (source classifier: {self.source_classes})")
        if p.zero_bias:
            lines.append(f"zero conv biases (Caffe/PyTorch convs without bias): {len(p.zero_bias)} layers")
        if p.reinitialised:
            lines.append(f"re-initialised (fresh N(0, 0.01) classifier / no source): {', '.join(p.reinitialised)}")
        if p.msc_copies:
            lines.append(f"MSC copies checked equal and skipped: {len(p.msc_copies)} tensors")
        lines.append(f"leftovers (unused source tensors): {', '.join(p.leftovers) if p.leftovers else 'none'}")
        return "\n".join(lines)


def source_format_of(path):
    """"caffe" or "pth" from the file name; a ValueError naming the file otherwise."""
    name = str(path).lower()
    if name.endswith(_CAFFE_SUFFIXES):
        return "caffe"
    if name.endswith(_PTH_SUFFIXES):
        return "pth"
    raise ValueError(
        f"Unknown weights file type (expected {_CAFFE_SUFFIXES + _PTH_SUFFIXES}). Received: source={str(path)!r}"
    )


def read_source(path):
    """(format, {key: float32 array}) of a .caffemodel ("layer/i" keys) or .pth (state-dict keys)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found. Received: source={str(path)!r}")
    fmt = source_format_of(path)
    if fmt == "caffe":
        _, layers = read_caffemodel(path)
        tensors = {}
        for layer in layers:
            for i, blob in enumerate(layer.blobs):
                tensors[f"{layer.name}/{i}"] = blob
        return fmt, tensors
    return fmt, {k: v for k, v in read_pth(path).items()}


def convert(source, model=None, num_classes=None, width_multiplier=1.0, backbone_only=False):
    """Builds the single-scale DeepLab Keras model of a released weights file.

    Args:
      source: path of a .caffemodel (new `layer` or V1 `layers` format) or a
        deeplab-pytorch .pth.
      model: `build_model` name; None guesses it from the layer names
        (`mapping.guess_model`).
      num_classes: None keeps the source's class count; a different count keeps
        the backbone and re-initialises the classifier (N(0, 0.01), zero bias).
      width_multiplier: for reduced-width test files.
      backbone_only: map only the backbone (+ VGG fc6/fc7); the classifier is
        re-initialised (an ImageNet init like vgg16_20M).

    Returns:
      `Conversion`; `.model` maps images float32 [B, H, W, 3] (Caffe BGR minus
      mean) to logits float32 [B, h, w, C] (h, w: `models.strides.logits_size`).

    Raises:
      FileNotFoundError / ValueError naming the file and the first mismatch.
    """
    from deeplab_keras.models.build import build_model
    from deeplab_keras.models.registry import get_spec

    fmt, tensors = read_source(source)
    what = repr(str(source))
    try:
        name = model or mapping.guess_model(tensors, fmt)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    spec = get_spec(name)
    src_classes = mapping.source_classes(tensors, fmt, spec.backbone)
    if num_classes is None:
        if src_classes is None:
            raise ValueError(f"{what} has no classifier layer: pass num_classes (--num-classes)")
        num_classes = src_classes
    reinit = backbone_only or src_classes is None or num_classes != src_classes
    keras_model = build_model(name, num_classes=num_classes, width_multiplier=width_multiplier)
    plan = mapping.plan_weights(keras_model, tensors, fmt, what, reinit_classifier=reinit,
                                backbone_only=backbone_only)
    for layer, arrays in plan.assign:
        layer.set_weights(arrays)
    return Conversion(keras_model, name, num_classes, src_classes, plan, fmt)


def save_atomic(model, output):
    """Saves a Keras model to `output` (.keras) through a temporary file in the same folder."""
    output = pathlib.Path(output)
    if output.suffix != ".keras":
        raise ValueError(f"output must be a .keras file. Received: output={str(output)!r}")
    return atomic_save(model.save, output, ".keras")
