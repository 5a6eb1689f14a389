"""ONNX export through tf2onnx, from a tf.function (not `from_keras`).

The same inference graph as the TFLite export (pre-processing, model, bilinear
upsampling, optional dense CRF, argmax) is traced as a tf.function and handed
to `tf2onnx.convert.from_function`. At a fixed input size tf2onnx turns
Keras's SpaceToBatchND/Conv2D/BatchToSpaceND into one ONNX `Conv` with
`dilations`; with `size=None` (dynamic H / W) the model still converts and runs,
but as Pad/SpaceToDepth/Conv/DepthToSpace chains.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deeplab_keras.export.serving import (
    export_info,
    fixed_size_function,
    normalize_size,
    portable_tracing,
    resolve_crf,
)
from deeplab_keras.export.tflite import DEFAULT_SIZE, write_bytes_atomic, write_sidecar

DEFAULT_OPSET = 17


def convert_onnx(model, *, size=DEFAULT_SIZE, crf=None, include_probabilities=False,
                 opset=DEFAULT_OPSET):
    """DeepLab model -> onnx.ModelProto (see `export_onnx`)."""
    import tf2onnx

    if not isinstance(opset, int) or isinstance(opset, bool) or opset < 13:
        raise ValueError(f"opset must be an int >= 13. Received: opset={opset!r}")
    size = None if size is None else normalize_size(size)
    batch = 1 if size is not None else None
    crf_layer = resolve_crf(crf)
    fn = fixed_size_function(model, size, crf_layer, include_probabilities, batch_size=batch)
    with portable_tracing(crf_layer):  # tf2onnx traces `fn` itself
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset)
    return resize_scales_to_sizes(proto)


def resize_scales_to_sizes(proto):
    """Give every constant-`scales` Resize node exact integer `sizes` instead.

    For a static ResizeBilinear, tf2onnx 1.17 writes `scales = H_out / H_in` in
    float32, e.g. 97 / 13 = 7.4615383, and ONNX shape inference computes
    floor(13 * 7.4615383) = 96 rows where TensorFlow produced 97. onnxruntime
    then rejects any graph in which that off-by-one shape meets a tensor of
    the true size (the CRF's reshapes) with "Incompatible dimensions". The
    intended size is the integer nearest to H_in * scale (the float32 error is
    far below 0.5), so the Resize gets `sizes` (its 4th input) and an empty
    `scales`. Resize nodes with a dynamic size are left alone.

    Args:
      proto: onnx.ModelProto from tf2onnx.

    Returns:
      The same ModelProto, modified in place.
    """
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    initializers = {init.name: init for init in proto.graph.initializer}
    constants = {node.output[0]: node for node in proto.graph.node if node.op_type == "Constant"}
    for node in proto.graph.node:
        if node.op_type != "Resize" or len(node.input) < 3 or not node.input[2]:
            continue
        if len(node.input) > 3 and node.input[3]:
            continue
        if node.input[2] in initializers:
            scales = numpy_helper.to_array(initializers[node.input[2]])
        elif node.input[2] in constants:
            scales = numpy_helper.to_array(constants[node.input[2]].attribute[0].t)
        else:
            continue
        in_shape = shapes.get(node.input[0])
        if scales.size == 0 or in_shape is None or None in in_shape or len(in_shape) != scales.size:
            continue
        sizes = np.array([int(round(d * s)) for d, s in zip(in_shape, scales.astype(np.float64))], np.int64)
        name = f"{node.name}_sizes"
        proto.graph.initializer.append(numpy_helper.from_array(sizes, name))
        del node.input[2:]
        node.input.extend(["", name])
    return proto


def export_onnx(model, path, *, size=DEFAULT_SIZE, crf=None, include_probabilities=False,
                opset=DEFAULT_OPSET, overwrite=False, check=True):
    """Write an ONNX model with pre/post-processing in the graph.

    Graph input "images": float32 [1, H, W, 3] RGB 0-255 ([N, H, W, 3] with
    dynamic sizes when `size=None`). Outputs: "labels" int32 [1, H, W],
    "logits" float32 [1, h8, w8, C] and, optionally,
    "probabilities" float32 [1, H, W, C].

    Args:
      model: DeepLab Keras model.
      path: output .onnx file (written atomically).
      size: (height, width), one int, or None for dynamic batch / H / W.
      crf: None, True or a DenseCRF instance.
      include_probabilities: add the "probabilities" output.
      opset: ONNX opset (>= 13).
      overwrite: replace an existing file.
      check: load the result in onnxruntime before writing it.

    Returns:
      Path of the .onnx file.

    Example:
      >>> path = export_onnx(model, "savedmodels/vgg16_largefov/onnx/model.onnx", size=513)
      >>> import onnxruntime as ort
      >>> sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
      >>> labels = sess.run(["labels"], {"images": rgb[None].astype("float32")})[0]
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists. Pass overwrite=True (--overwrite) to replace it.")
    crf_layer = resolve_crf(crf)
    data = convert_onnx(model, size=size, crf=crf_layer, include_probabilities=include_probabilities,
                        opset=opset).SerializeToString()
    if check:
        _session(data)
    path = write_bytes_atomic(path, data, overwrite=overwrite)
    shape = "[N, H, W, 3]" if size is None else f"[1, {normalize_size(size)[0]}, {normalize_size(size)[1]}, 3]"
    write_sidecar(path, export_info(
        model, crf_layer, format="onnx", opset=opset,
        input={"images": f"float32 {shape} RGB 0-255"},
        outputs=["labels", "logits"] + (["probabilities"] if include_probabilities else [])))
    return path


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, (str, os.PathLike)) else bytes(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_op_types(model):
    """Op types of an ONNX model (path or bytes), in graph order."""
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, os.PathLike)) else onnx.load_from_string(bytes(model))
    return [node.op_type for node in proto.graph.node]


def run_onnx(model, images):
    """Run an exported ONNX model with onnxruntime, image by image.

    Args:
      model: path to a .onnx file, or its bytes.
      images: float32 [N, H, W, 3] RGB 0-255.

    Returns:
      dict of stacked outputs, e.g. labels int32 [N, H, W].
    """
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    outputs = {name: [] for name in names}
    for image in np.asarray(images, np.float32):
        for name, value in zip(names, session.run(names, {"images": image[None]})):
            outputs[name].append(value[0])
    return {name: np.stack(values) for name, values in outputs.items()}
