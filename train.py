#!/usr/bin/env python
"""Train DeepLab: `python train.py` (built-in data, CPU, minutes) or `--preset ...`.

A thin entry point over `deeplab_keras.app.train_cli`; see `python train.py --help`.
"""

import sys

from deeplab_keras.app.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
