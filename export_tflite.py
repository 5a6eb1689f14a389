#!/usr/bin/env python
"""Export DeepLab: `python export_tflite.py MODEL --formats all --size 513 [--crf]`.

A thin entry point over `deeplab_keras.app.export_cli` (also installed as
`deeplab-export`): SavedModel for TF Serving, TFLite (float32 / float16 /
dynamic-range int8 / full-integer int8) and ONNX under savedmodels/<name>/.
See `python export_tflite.py --help`.
"""

import sys

from deeplab_keras.app.export_cli import main

if __name__ == "__main__":
    sys.exit(main())
