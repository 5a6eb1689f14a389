"""Reads (and writes) Caffe `.caffemodel` files without Caffe, by decoding the protobuf wire format.

Only the subset of caffe.proto that holds weights is decoded (field numbers in
DESIGN.md Sec. 6); every other field is skipped by its wire type:

- NetParameter: name = 1, layers = 2 (V1LayerParameter, the old format of the
  DeepLab v1 and vgg16_20M files), layer = 100 (LayerParameter, new format).
- LayerParameter: name = 1, type = 2 (string), blobs = 7.
- V1LayerParameter: name = 4, type = 5 (enum), blobs = 6.
- BlobProto: num/channels/height/width = 1/2/3/4 (legacy 4-d shape), data = 5
  (float, packed or not), shape = 7 (BlobShape, dim = 1), double_data = 8.

A hand-written decoder needs no generated code and no protobuf runtime, and it
decodes a 170 MB ResNet-101 file with NumPy views over the float payloads.
"""

import dataclasses

import numpy as np

# V1LayerParameter.LayerType values that occur in DeepLab files (caffe.proto).
V1_TYPES = {
    0: "None", 1: "Accuracy", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    8: "Flatten", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU", 19: "Sigmoid",
    20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 25: "Eltwise", 29: "MemoryData",
    33: "Slice", 39: "Deconvolution",
}
_V1_CODES = {v: k for k, v in V1_TYPES.items()}


class CaffeModelError(ValueError):
    """A file that is not a readable caffemodel (truncated, garbage, no weights)."""


@dataclasses.dataclass
class CaffeLayer:
    """One layer of a caffemodel: name, type string and its blobs (float32 arrays)."""

    name: str
    type: str
    blobs: list
    legacy_shapes: bool = False  # blob shapes from num/channels/height/width


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeModelError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeModelError("varint longer than 10 bytes")


def _fields(buf, start=0, end=None):
    """Yields (field number, wire type, value, ) over a message in buf[start:end].

    value: an int for varints / fixed32 / fixed64 (raw), or a (start, end) slice
    for length-delimited fields.
    """
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise CaffeModelError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise CaffeModelError("truncated fixed64")
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise CaffeModelError(f"field {field} of {length} bytes runs past the end of its message")
            value, pos = (pos, pos + length), pos + length
        elif wire == 5:
            if pos + 4 > end:
                raise CaffeModelError("truncated fixed32")
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        else:
            raise CaffeModelError(f"unsupported wire type {wire} (field {field}) at byte {pos}")
        yield field, wire, value


def _packed_ints(buf, wire, value):
    if wire == 0:
        return [value]
    start, end = value
    out, pos = [], start
    while pos < end:
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def _read_blob(buf, start, end):
    legacy = {}
    shape = None
    data, doubles = [], []
    for field, wire, value in _fields(buf, start, end):
        if field in (1, 2, 3, 4) and wire == 0:
            legacy[field] = value
        elif field == 5:
            if wire == 2:
                s, e = value
                if (e - s) % 4:
                    raise CaffeModelError("float data length is not a multiple of 4")
                data.append(np.frombuffer(buf, "<f4", (e - s) // 4, s))
            elif wire == 5:
                data.append(np.frombuffer(value, "<f4"))
        elif field == 8:
            if wire == 2:
                s, e = value
                doubles.append(np.frombuffer(buf, "<f8", (e - s) // 8, s))
            elif wire == 1:
                doubles.append(np.frombuffer(value, "<f8"))
        elif field == 7 and wire == 2:
            shape = []
            for f2, w2, v2 in _fields(buf, *value):
                if f2 == 1:
                    shape.extend(_packed_ints(buf, w2, v2))
    if len(data) == 1:
        values = data[0]  # a read-only view into the file buffer; copied once below
    elif data:
        values = np.concatenate(data)
    else:
        values = np.concatenate(doubles).astype(np.float32) if doubles else np.zeros(0, np.float32)
    is_legacy = shape is None
    if is_legacy:
        shape = [legacy.get(k, 1) for k in (1, 2, 3, 4)] if legacy else [values.size]
    size = int(np.prod(shape)) if shape else 1
    if size != values.size:
        raise CaffeModelError(f"blob of shape {tuple(shape)} holds {values.size} values")
    return np.array(values, np.float32).reshape(shape), is_legacy


def _read_layer(buf, start, end, v1):
    name_field, type_field, blobs_field = (4, 5, 6) if v1 else (1, 2, 7)
    name, type_, blobs, legacy = None, None, [], False
    for field, wire, value in _fields(buf, start, end):
        if field == name_field and wire == 2:
            name = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif field == type_field:
            if v1 and wire == 0:
                type_ = V1_TYPES.get(value, f"V1Type{value}")
            elif not v1 and wire == 2:
                type_ = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif field == blobs_field and wire == 2:
            blob, is_legacy = _read_blob(buf, *value)
            blobs.append(blob)
            legacy |= is_legacy
    return CaffeLayer(name or "", type_ or "", blobs, legacy)


def read_caffemodel(path):
    """Reads the named layers and their weight blobs of a .caffemodel file.

    Args:
      path: str / os.PathLike of a binary NetParameter (new `layer` or V1 `layers`).

    Returns:
      (net_name, layers): the NetParameter name and a list of `CaffeLayer` in
      file order, only those with blobs. Blobs are float32 arrays in Caffe layout
      (conv weights (out, in, kh, kw); V1 files give 4-d num/channels/height/width).

    Raises:
      CaffeModelError (a ValueError) naming the file: truncated or not a
        caffemodel, or a caffemodel without any weights.

    Example:
      >>> name, layers = read_caffemodel("train_iter_20000.caffemodel")
      >>> layers[0].name, layers[0].blobs[0].shape   # ResNet-101: 64 filters at full width
      ('conv1', (..., 3, 7, 7))
    """
    path = str(path)
    with open(path, "rb") as f:
        buf = f.read()
    try:
        net_name, layers, seen_layer_field = "", [], False
        for field, wire, value in _fields(buf):
            if field == 1 and wire == 2:
                net_name = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
            elif field in (2, 100) and wire == 2:
                seen_layer_field = True
                layer = _read_layer(buf, *value, v1=field == 2)
                if layer.blobs:
                    layers.append(layer)
    except CaffeModelError as err:
        raise CaffeModelError(f"{path!r} is not a readable caffemodel (truncated or not Caffe): {err}") from None
    if not seen_layer_field:
        raise CaffeModelError(f"{path!r} is not a caffemodel: it has no NetParameter layer/layers field")
    if not layers:
        raise CaffeModelError(f"{path!r} is a Caffe net without weights (a prototxt-only binary?)")
    return net_name, layers


# --- writing (tests, benchmarks): the same subset, in either format ---------------------------

def _key(field, wire):
    return _enc_varint((field << 3) | wire)


def _enc_varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(field, payload):
    return _key(field, 2) + _enc_varint(len(payload)) + payload


def _enc_blob(array, legacy):
    array = np.asarray(array, np.float32)
    out = bytearray()
    if legacy:
        shape = (1,) * (4 - array.ndim) + array.shape
        if len(shape) != 4:
            raise ValueError(f"a legacy blob has at most 4 dims. Received: shape={array.shape}")
        for field, d in zip((1, 2, 3, 4), shape):
            out += _key(field, 0) + _enc_varint(d)
        out += _len_field(5, array.astype("<f4").tobytes())
    else:
        out += _len_field(5, array.astype("<f4").tobytes())
        dims = b"".join(_enc_varint(d) for d in array.shape)
        out += _len_field(7, _len_field(1, dims))
    return bytes(out)


def write_caffemodel(path, layers, v1=False, net_name="deeplab"):
    """Writes layers [(name, type, [arrays])] as a binary caffemodel (new or V1 format).

    New format: LayerParameter with `shape` blobs. V1 format: V1LayerParameter
    with the type enum and legacy num/channels/height/width blobs (1-d bias ->
    1x1x1xN), as in the DeepLab v1 release files.
    """
    out = bytearray(_len_field(1, net_name.encode()))
    for name, type_, blobs in layers:
        body = bytearray()
        if v1:
            body += _len_field(4, name.encode())
            body += _key(5, 0) + _enc_varint(_V1_CODES[type_])
            for b in blobs:
                body += _len_field(6, _enc_blob(b, legacy=True))
            out += _len_field(2, bytes(body))
        else:
            body += _len_field(1, name.encode()) + _len_field(2, type_.encode())
            for b in blobs:
                body += _len_field(7, _enc_blob(b, legacy=False))
            out += _len_field(100, bytes(body))
    with open(path, "wb") as f:
        f.write(out)

