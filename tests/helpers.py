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


def png_bytes(width, height, idat, *, bit_depth=8, color_type=2):
    """A PNG file written chunk by chunk, for headers PIL would not write: any
    declared size (the pixel data `idat`, already zlib-compressed, may be far
    shorter than the header promises) and 16-bit colour. color_type 0 = grey, 2 = RGB."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))
