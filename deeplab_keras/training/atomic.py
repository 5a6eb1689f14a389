"""Moved to `deeplab_keras.utils.atomic` (the ground layer); kept so old imports work."""
from deeplab_keras.utils.atomic import atomic_save, atomic_write_text, check_writable  # noqa: F401
