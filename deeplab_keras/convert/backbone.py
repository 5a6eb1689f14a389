"""The backbone of a released DeepLab file, loaded into a model: `backbone_weights="init.caffemodel"`.

The models layer does not know the Caffe / PyTorch formats; this module, in the
layer that does, reads the file and maps it with the converter's strict plan
(every backbone layer and VGG fc6/fc7 by name and shape; the classifier keeps
its fresh initialisation), and `deeplab_keras.convert` registers it with
`models.weights.register_backbone_reader` so that `build_model(...,
backbone_weights=...)` accepts these files.
"""

from deeplab_keras.convert.convert import read_source
from deeplab_keras.convert.mapping import plan_weights

SUFFIXES = (".caffemodel", ".pth", ".pt")


def load_released_backbone(model, source):
    """Backbone (+ VGG fc6/fc7) of a .caffemodel / .pth into `model`.

    Args:
      model: a single-scale DeepLab model from `build_model` (width 1).
      source: path of a .caffemodel (new or V1 format) or deeplab-pytorch .pth.

    Returns:
      list of the names of the layers that received weights.

    Raises:
      FileNotFoundError / ValueError: naming the file and the first mismatch;
        nothing is loaded in that case.
    """
    fmt, tensors = read_source(source)
    plan = plan_weights(model, tensors, fmt, repr(str(source)), backbone_only=True)
    for layer, arrays in plan.assign:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in plan.assign]
