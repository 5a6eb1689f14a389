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


def write_released_caffemodel(path, *, net="largefov", seed=0, v1=None):
    """A generated caffemodel in a released layout (the official layer names, blob
    layouts, pads and dilations; widths reduced to `tests.test_convert_reference.WIDTH`),
    written to `path`: the stand-in for a downloaded release. `net`: "largefov"
    (DeepLab v1 LargeFOV, V1 `layers` format, head fc8_voc12), "aspp_l" (v2 VGG16
    ASPP-L, new `layer` format) or "resnet" (v2 ResNet-101 ASPP, new format, single-scale
    layers). Returns (path, width_multiplier). Needs torch (the reference module imports it)."""
    from deeplab_keras.convert.caffemodel import write_caffemodel
    from tests.test_convert_reference import (WIDTH, random_blobs, resnet101_net, vgg_aspp_l_net,
                                              vgg_largefov_net)

    layers = {"largefov": vgg_largefov_net, "aspp_l": vgg_aspp_l_net,
              "resnet": resnet101_net}[net]()
    blobs = random_blobs(layers, seed=seed)
    write_caffemodel(path, [(l["name"], l["type"], blobs[l["name"]]) for l in layers
                            if l["name"] in blobs],
                     v1=(net == "largefov") if v1 is None else v1)
    return path, WIDTH


def ops_run(fn, *args):
    """Names of the TF op types that ran while `fn(*args)` executed (profiler)."""
    import glob
    import os
    import shutil
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    fn(*args)  # trace / compile and optimise outside the profile
    logdir = tempfile.mkdtemp()
    tf.profiler.experimental.start(logdir)
    try:
        fn(*args)
    finally:
        tf.profiler.experimental.stop()
    ops = set()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            ops.update(m.name.rsplit(":", 1)[-1] for m in plane.event_metadata.values() if ":" in m.name)
    shutil.rmtree(logdir, ignore_errors=True)
    return ops


def assert_runs_fast_crf(ops):
    """`ops` (from `ops_run`) are the CRF's fast CPU form: the sparse lattice
    (SparseTensorDenseMatMul) and the depthwise spatial filter, not the
    transposed conv2d it needs when the class count is unknown."""
    assert "SparseTensorDenseMatMul" in ops, sorted(ops)
    assert any("DepthwiseConv2d" in op for op in ops), sorted(ops)
    assert "Transpose" not in ops, sorted(ops)
