"""`python -m deeplab_keras.evaluation` = `deeplab-evaluate`."""

import sys

from deeplab_keras.evaluation.cli import main

sys.exit(main())
