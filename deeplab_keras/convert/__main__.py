import sys

from deeplab_keras.convert.cli import main

sys.exit(main())
