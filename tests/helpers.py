"""Helpers shared by several test modules."""


def save_tiny_model(directory, num_classes, seed):
    """A random-weight VGG16-LargeFOV at 1/8 width saved as `directory/tiny.keras`:
    the cheapest real DeepLab network, for tests of code that loads model files."""
    import keras

    from deeplab_keras.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("vgg16_largefov", num_classes=num_classes, width_multiplier=0.125)
    path = directory / "tiny.keras"
    model.save(path)
    return path
