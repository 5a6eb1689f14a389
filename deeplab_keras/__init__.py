"""deeplab_keras: DeepLab v1 and v2 for Keras 3 on TensorFlow.

Submodules:
  models      the DeepLab networks (`build_model`), MSC wrapper, logit resizing.
  crf         the dense CRF as TensorFlow ops (`crf.DenseCRF`).
  data        VOC 2012 / SBD readers, the tf.data pipeline, the built-in dataset.
  training    presets, schedules, optimizer, loss, `model.fit` driver.
  evaluation  mIoU, MSC / CRF inference.
  export      SavedModel / TFLite / ONNX export and checks.

The heavy submodules are imported lazily so that `import deeplab_keras` is cheap.
"""

from deeplab_keras._lazy import lazy_getattr

__version__ = "0.1.0"

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
    "palette", "viz"))
