"""Backbone input preprocessing, shared by the data pipeline, export and predict.

Both ImageNet backbones (keras.applications VGG16 and ResNet101) were trained with
Caffe-style inputs: BGR channel order, ImageNet mean subtracted, no scaling. Every
DeepLab model in this package takes that representation; the images the CRF sees
are plain RGB in 0-255 (use `deprocess_images` to get them back).
"""

import numpy as np

# ImageNet channel means in RGB order (Caffe's BGR mean reversed).
MEAN_RGB = (123.68, 116.779, 103.939)


def preprocess_images(images):
    """RGB in 0-255 -> Caffe-style BGR with the ImageNet mean subtracted.

    Args:
      images: [..., 3] RGB, any real or integer dtype, values in 0-255
        (a tf.Tensor or a NumPy array).

    Returns:
      float32 [..., 3] BGR minus the mean, of the same kind (tf / NumPy) as the input.

    Example:
      >>> x = preprocess_images(np.full((1, 2, 2, 3), 255, np.uint8))
      >>> x.shape
      (1, 2, 2, 3)
    """
    if isinstance(images, np.ndarray):
        x = images.astype(np.float32)
        return x[..., ::-1] - np.asarray(MEAN_RGB[::-1], np.float32)
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    return tf.reverse(x, axis=[-1]) - tf.constant(MEAN_RGB[::-1], tf.float32)


def deprocess_images(x):
    """Inverse of `preprocess_images`: float32 [..., 3] RGB in 0-255 (not clipped)."""
    if isinstance(x, np.ndarray):
        return (x.astype(np.float32) + np.asarray(MEAN_RGB[::-1], np.float32))[..., ::-1]
    import tensorflow as tf

    x = tf.cast(x, tf.float32) + tf.constant(MEAN_RGB[::-1], tf.float32)
    return tf.reverse(x, axis=[-1])
