"""Export DeepLab models for serving: SavedModel (TF Serving), TFLite and ONNX.

  export_saved_model  savedmodels/<name>/<version>/ with image-bytes signatures.
  export_tflite       fixed-size TFLite (float32 / float16 / dynamic int8 / int8).
  export_onnx         ONNX through tf2onnx, checked with onnxruntime.

Pre-processing, logit upsampling and the optional dense CRF run inside every
exported graph (see `deeplab_keras.export.serving`).
"""

from deeplab_keras.export.saved_model import export_saved_model

__all__ = ["export_saved_model"]


def __getattr__(name):
    import importlib

    lazy = {
        "export_tflite": "deeplab_keras.export.tflite",
        "tflite_op_names": "deeplab_keras.export.tflite",
        "TFLITE_QUANTIZATIONS": "deeplab_keras.export.tflite",
        "export_onnx": "deeplab_keras.export.onnx",
    }
    if name in lazy:
        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'deeplab_keras.export' has no attribute {name!r}")
