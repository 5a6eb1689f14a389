"""deeplab_keras: DeepLab v1 and v2 for Keras 3 on TensorFlow.

Submodules:
  models      the DeepLab networks (`build_model`), MSC wrapper, logit resizing.
  crf         the dense CRF as TensorFlow ops (`crf.DenseCRF`).
  data        VOC 2012 / SBD readers, the tf.data pipeline, the built-in dataset.
  training    presets, schedules, optimizer, loss, `model.fit` driver.
  evaluation  mIoU, MSC / CRF inference.
  export      SavedModel / TFLite / ONNX export and checks.

As with keras-hub, `import deeplab_keras` registers every serializable class (the
model layers, `DenseCRF`, the loss, the schedules and the optimizer), so that a
saved model loads the Keras way:

  >>> import deeplab_keras, keras
  >>> keras.saving.get_registered_object("deeplab_keras>AtrousConv2D")
  <class 'deeplab_keras.models.atrous.AtrousConv2D'>

Only the modules that define those classes are imported (and with them
TensorFlow and Keras), plus the released-file reader that `build_model`'s
`backbone_weights=` uses; export, evaluation, predict and the command lines are
imported lazily, on first attribute access.
"""

import importlib as _importlib

from deeplab_keras._lazy import lazy_getattr

__version__ = "0.1.0"

# The modules holding `@keras.saving.register_keras_serializable` classes, imported
# for their side effect (tests/test_load_saved.py checks this list is complete).
REGISTRATION_MODULES = (
    "deeplab_keras.models.layers",      # ResizeLogits, ScaleImage (MSC inputs)
    "deeplab_keras.models.atrous",      # AtrousConv2D
    "deeplab_keras.crf.dense_crf",      # DenseCRF
    "deeplab_keras.training.losses",    # SegmentationCrossEntropy
    "deeplab_keras.training.schedules",  # StepDecay, PolyDecay
    "deeplab_keras.training.optimizer",  # DeepLabSGD
)
for _module in REGISTRATION_MODULES:
    _importlib.import_module(_module)
del _module
# `build_model(..., backbone_weights="init.caffemodel")` reads released files through
# the converter (docs/ARCHITECTURE.md: models may not import convert, the layer above).
# The facade registers a reader that imports the converter on first use, so that
# `import deeplab_keras` does not load it; importing `deeplab_keras.convert` registers
# the same reader directly.
def _released_backbone(model, source):
    from deeplab_keras.convert import load_released_backbone

    return load_released_backbone(model, source)


from deeplab_keras.models.weights import _RELEASED_SUFFIXES  # noqa: E402
from deeplab_keras.models.weights import register_backbone_reader as _register  # noqa: E402

_register(_RELEASED_SUFFIXES, _released_backbone)

_LAZY = {
    "build_model": "deeplab_keras.models",
    "available_models": "deeplab_keras.models",
    "resize_logits": "deeplab_keras.models",
    "wrap_msc": "deeplab_keras.models",
    "classifier_layers": "deeplab_keras.models",
    "OUTPUT_STRIDE": "deeplab_keras.models",
    "DenseCRF": "deeplab_keras.crf",
    "dense_crf": "deeplab_keras.crf",
}


__getattr__ = lazy_getattr(__name__, _LAZY, (
    "models", "crf", "data", "training", "evaluation", "export", "predict", "preprocessing",
    "palette", "viz", "labels", "convert"))
