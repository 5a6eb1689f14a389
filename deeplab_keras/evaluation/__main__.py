"""`python -m deeplab_keras.evaluation` = `deeplab-evaluate`.

An upward import on purpose: the command line lives in the top layer
(`deeplab_keras.app.evaluate_cli`, which needs training's presets and
checkpoints), and this file only keeps the documented `python -m` spelling
working. Nothing imports this module (allow-listed in tests/test_architecture.py).
"""

import sys

from deeplab_keras.app.evaluate_cli import main

sys.exit(main())
