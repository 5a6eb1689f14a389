"""`python -m deeplab_keras.predict`: the same as `deeplab-predict`."""

import sys

from deeplab_keras.predict.cli import main

sys.exit(main())
