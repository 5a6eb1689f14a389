"""Export DeepLab models for serving: SavedModel (TF Serving), TFLite and ONNX.

  export_saved_model  savedmodels/<name>/<version>/ (atomic, versioned) with a
                      `serving_default` signature on encoded image bytes, plus
                      float-image and logits signatures.
  export_tflite       fixed-size TFLite: float32 / float16 / dynamic_int8 / int8,
                      builtin ops only, dilated convs folded into CONV_2D.
  export_onnx         ONNX through tf2onnx, checked with onnxruntime.
  checks              parity of every format with the Keras model.

The command line (`deeplab-export` / `python export_tflite.py`) is
`deeplab_keras.app.export_cli`: it resolves training presets, one layer up.

Pre-processing, the bilinear upsampling of the stride-8 logits and, optionally,
the dense CRF run inside every exported graph (`deeplab_keras.export.serving`).

Example:
  >>> from deeplab_keras.export import export_saved_model, export_tflite
  >>> export_saved_model(model, "savedmodels/vgg16_largefov")          # .../1
  >>> export_tflite(model, "model_int8.tflite", size=513, quantization="int8")
"""

from deeplab_keras._lazy import lazy_getattr
from deeplab_keras.export.saved_model import export_saved_model

__all__ = ["export_saved_model", "export_tflite", "export_onnx", "run_tflite", "run_onnx",
           "tflite_op_names", "gpu_delegate_report", "TFLITE_QUANTIZATIONS"]

_LAZY = {
    "export_tflite": "deeplab_keras.export.tflite",
    "convert_tflite": "deeplab_keras.export.tflite",
    "run_tflite": "deeplab_keras.export.tflite",
    "tflite_op_names": "deeplab_keras.export.tflite",
    "gpu_delegate_report": "deeplab_keras.export.tflite",
    "representative_images": "deeplab_keras.export.tflite",
    "TFLITE_QUANTIZATIONS": "deeplab_keras.export.tflite",
    "export_onnx": "deeplab_keras.export.onnx",
    "run_onnx": "deeplab_keras.export.onnx",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
