"""TFLite export at a fixed input size, builtin ops only.

TensorFlow runs a dilated convolution on CPU as SpaceToBatchND -> Conv2D ->
BatchToSpaceND. With a static input size the TFLite converter folds that triple
back into one dilated CONV_2D; with a dynamic H / W it cannot, and the leftover
SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND are what the TFLite GPU delegate rejects.
So the graph is traced at one size (default 513 x 513, batch 1) and the op list
is checked after conversion.

Keras 3 models do not go through `TFLiteConverter.from_keras_model`: the
inference function (pre-processing, model, bilinear upsampling, optional CRF,
argmax) is traced as a tf.function, its variables frozen to constants, and the
frozen concrete function converted.

Quantizations (`TFLITE_QUANTIZATIONS`):
  float32       no quantization.
  float16       weights stored as float16, computed in float32.
  dynamic_int8  weights int8, activations quantized on the fly (dynamic range).
  int8          weights and activations int8, calibrated on a representative
                dataset drawn from the data pipeline; the model's input and
                outputs stay float32 / int32 (quantize / dequantize in graph).
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from deeplab_keras.export.serving import (
    CRF_SCOPE,
    export_info,
    fixed_size_function,
    model_num_classes,
    normalize_size,
    portable_tracing,
    resolve_crf,
)

TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")
FORBIDDEN_OPS = ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")
DEFAULT_SIZE = (513, 513)
DEFAULT_CALIBRATION_IMAGES = 100


def frozen_function(fn):
    """A tf.function with input_signature -> a variable-free concrete function.

    The output structure (a dict) is kept, so the TFLite / ONNX signature has
    named outputs ("labels", "logits", ...). Keras 3 variables are not frozen by
    the converter's SavedModel path (they stay as VAR_HANDLE / READ_VARIABLE
    ops), hence the explicit `convert_variables_to_constants_v2`.
    """
    concrete = fn.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs
    spec = concrete.structured_input_signature[0][0]

    @tf.function(input_signature=[spec], autograph=False)
    def wrapped(images):
        return tf.nest.pack_sequence_as(structure, tf.nest.flatten(frozen(images)))

    return wrapped.get_concrete_function()


def write_bytes_atomic(path, data, overwrite=False):
    """Write `data` to `path` via a temporary file and rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists. Pass overwrite=True (--overwrite) to replace it.")
    if path.exists() and path.is_dir():
        raise IsADirectoryError(f"Output path is a directory: {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # keep the class (PermissionError, FileNotFoundError, ...)
        raise type(e)(e.errno, f"Cannot create directory {path.parent}: {e.strerror}") from e
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except PermissionError as e:
        raise PermissionError(e.errno, f"Output directory is not writable: {path.parent}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_sidecar(path, info, overwrite=False):
    """Write `info` as JSON to `<path>.json` (atomically), next to an export file."""
    import json

    data = (json.dumps(info, indent=2) + "\n").encode()
    return write_bytes_atomic(Path(f"{path}.json"), data, overwrite=True)


def tflite_op_names(model):
    """Op names of a TFLite model, in execution order.

    Args:
      model: path to a .tflite file, or its bytes.

    Returns:
      list of str, e.g. ["CONV_2D", "MAX_POOL_2D", ..., "ARG_MAX"].
    """
    return [op["op_name"] for op in _interpreter(model)._get_ops_details()]


def _interpreter(model):
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (str, os.PathLike)):
        return Interpreter(model_path=str(model))
    return Interpreter(model_content=bytes(model))


def gpu_delegate_report(model):
    """What the TFLite GPU delegate can take of a model.

    Two views, because the first is optimistic:

    * TensorFlow's own check, `tf.lite.experimental.Analyzer` with
      gpu_compatibility=True (its verdict line and any per-op warnings);
    * the ops whose output shape is only known at run time (a -1 in the
      tensor's shape signature). The GPU delegate needs static shapes, so
      these ops, and what depends on them, stay on the CPU. For the dense
      CRF that is the lattice (UNIQUE over the lattice keys, and all
      that the number of lattice points sizes); the network, upsampling and the CRF's spatial
      kernel are static.

    Args:
      model: path to a .tflite file, or its bytes.

    Returns:
      dict: "analyzer_compatible" (bool), "analyzer_messages" (list of str),
      "dynamic_ops" (sorted op names with a run-time output shape),
      "num_dynamic_ops" / "num_ops" (counts of op instances).
    """
    from tensorflow.lite.python.analyzer_wrapper import _pywrap_analyzer_wrapper

    content = Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else bytes(model)
    text = _pywrap_analyzer_wrapper.ModelAnalyzer(content, False, True)
    messages = [line.strip() for line in text.splitlines() if "GPU" in line]
    interpreter = _interpreter(content)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    dynamic = [op["op_name"] for op in ops
               if any(-1 in tensors[i]["shape_signature"] for i in op["outputs"] if i in tensors)]
    return {
        "analyzer_compatible": any("looks compatible with GPU delegate" in m for m in messages),
        "analyzer_messages": messages,
        "dynamic_ops": sorted(set(dynamic)),
        "num_dynamic_ops": len(dynamic),
        "num_ops": len(ops),
    }


def check_ops(op_names):
    """Raise RuntimeError if the op list has Flex ops or unfolded dilated convs."""
    bad = sorted({op for op in op_names if op in FORBIDDEN_OPS or op.startswith("Flex")
                  or op == "DELEGATE" or op == "CUSTOM"})
    if bad:
        raise RuntimeError(
            f"The TFLite model contains ops that should not be there: {bad}. "
            "SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND mean a dilated conv was not folded "
            "(the input size must be static); Flex/custom ops need the TF runtime."
        )


def representative_images(size, num_images=DEFAULT_CALIBRATION_IMAGES, data_dir=None,
                          split="train", seed=0, num_classes=21):
    """Calibration images for full-integer quantization, from the data pipeline.

    Draws `num_images` random crops (random scale 0.5-1.5, crop, flip: the
    training augmentation) of `size` from `deeplab_keras.data.make_dataset`,
    on the built-in dataset unless `data_dir` is given.

    Args:
      size: (height, width) of the TFLite input.
      num_images: number of calibration images.
      data_dir: VOCdevkit directory (None: the built-in dataset).
      split: dataset split.
      seed: augmentation seed.
      num_classes: label range the pipeline validates against.

    Returns:
      list of float32 [1, H, W, 3] RGB 0-255 arrays (the TFLite input format).
    """
    from deeplab_keras.data import make_dataset
    from deeplab_keras.preprocessing import deprocess_images

    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive int. Received: num_images={num_images!r}")
    h, w = normalize_size(size)
    if data_dir is None:
        from deeplab_keras.data import builtin

        data_dir = builtin.ensure_builtin()
    ds = make_dataset(data_dir, split, training=True, batch_size=1, crop_size=(h, w), seed=seed,
                      num_classes=num_classes)
    images = []
    for batch_images, _ in ds.take(num_images):
        rgb = np.clip(deprocess_images(batch_images.numpy()), 0.0, 255.0).astype(np.float32)
        images.append(rgb)
    if not images:
        raise ValueError(f"No calibration images in split {split!r} of {data_dir}")
    return images


def convert_tflite(model, *, size=DEFAULT_SIZE, quantization="float32", crf=None,
                   include_probabilities=False, representative_data=None,
                   num_calibration_images=DEFAULT_CALIBRATION_IMAGES):
    """Convert a DeepLab model to TFLite bytes (see `export_tflite`)."""
    if quantization not in TFLITE_QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {TFLITE_QUANTIZATIONS}. Received: quantization={quantization!r}"
        )
    size = normalize_size(size)
    crf_layer = resolve_crf(crf)
    with portable_tracing(crf_layer, target="tflite"):
        concrete = frozen_function(fixed_size_function(model, size, crf_layer, include_probabilities))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    # Builtins only: a graph needing Flex ops fails to convert instead of
    # producing a file that needs the full TF runtime on the device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if representative_data is None:
            representative_data = representative_images(
                size, num_calibration_images, num_classes=max(21, model_num_classes(model)))
        samples = [np.asarray(x, np.float32) for x in representative_data]
        for x in samples:
            if x.shape != (1, *size, 3):
                raise ValueError(
                    f"representative_data images must be float32 [1, {size[0]}, {size[1]}, 3] "
                    f"RGB 0-255. Received an array of shape {x.shape}"
                )

        def dataset():
            for x in samples:
                yield [x]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        # Int8 kernels where they exist, float builtins for the rest; input
        # and outputs stay float32 / int32.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        if crf_layer is not None:
            return _int8_with_float_crf(concrete, converter, dataset)
    try:
        return converter.convert()
    except Exception as e:  # ConverterError: its message is pages of MLIR locations
        message = str(e)
        missing = re.findall(r"TF Select ops: ([^\n]+)", message)
        if missing:
            raise RuntimeError(
                f"The graph needs ops that are not TFLite builtins: {missing[0].strip()}. "
                "Only builtin ops are allowed (no Flex)."
            ) from None
        raise RuntimeError(f"TFLite conversion failed: {message.splitlines()[-1][:2000]}") from e


def _int8_with_float_crf(concrete, converter, dataset):
    """Full-integer network, float32 CRF (selective quantization).

    Quantizing the CRF is wrong: its mean-field messages and lattice weights
    need more than 8 bits (and when the CRF started with a LOG_SOFTMAX, the
    quantizer gave it an output scale its int8 kernel refuses at
    AllocateTensors). Every op under the CRF's name scope is denylisted, the
    documented selective-quantization route of `QuantizationDebugger`.
    """
    from ai_edge_litert.interpreter import Interpreter

    float_converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    float_converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    float_model = float_converter.convert()
    names = [t["name"] for t in Interpreter(model_content=float_model).get_tensor_details()]
    crf_nodes = [name for name in names if CRF_SCOPE in name]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=crf_nodes)
    with warnings.catch_warnings():  # it runs tf.lite.Interpreter internally
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=dataset, debug_options=options)
        return debugger.get_nondebug_quantized_model()


def export_tflite(model, path, *, size=DEFAULT_SIZE, quantization="float32", crf=None,
                  include_probabilities=False, representative_data=None,
                  num_calibration_images=DEFAULT_CALIBRATION_IMAGES, overwrite=False):
    """Write a fixed-size TFLite model with pre/post-processing in the graph.

    The TFLite signature "serving_default":
      images: float32 [1, H, W, 3] RGB 0-255
      -> labels int32 [1, H, W], logits float32 [1, h8, w8, C]
         (raw model output), probabilities float32 [1, H, W, C] (optional;
         the dense CRF output when `crf` is given).

    Only TFLite builtin ops are allowed; the op list is checked for Flex ops
    and unfolded dilated convolutions (SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND).

    Args:
      model: DeepLab Keras model.
      path: output .tflite file (written atomically).
      size: input (height, width) or one int for a square; default 513.
      quantization: one of TFLITE_QUANTIZATIONS.
      crf: None, True or a DenseCRF instance.
      include_probabilities: add the "probabilities" output.
      representative_data: for "int8": iterable of float32 [1, H, W, 3] RGB
        0-255 arrays; default `representative_images(size)` from the built-in
        data through `deeplab_keras.data.make_dataset`.
      num_calibration_images: how many images the default draws.
      overwrite: replace an existing file.

    Returns:
      Path of the .tflite file.

    Example:
      >>> path = export_tflite(model, "savedmodels/vgg16_largefov/tflite/model_int8.tflite",
      ...                      size=513, quantization="int8")
      >>> from ai_edge_litert.interpreter import Interpreter
      >>> runner = Interpreter(model_path=str(path)).get_signature_runner()
      >>> runner(images=rgb[None].astype("float32"))["labels"]
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists. Pass overwrite=True (--overwrite) to replace it.")
    crf = resolve_crf(crf)
    data = convert_tflite(model, size=size, quantization=quantization, crf=crf,
                          include_probabilities=include_probabilities,
                          representative_data=representative_data,
                          num_calibration_images=num_calibration_images)
    ops = tflite_op_names(data)
    check_ops(ops)
    path = write_bytes_atomic(path, data, overwrite=overwrite)
    size = normalize_size(size)
    write_sidecar(path, export_info(
        model, crf, format="tflite",
        quantization=quantization, input={"images": f"float32 [1, {size[0]}, {size[1]}, 3] RGB 0-255"},
        outputs=["labels", "logits"] + (["probabilities"] if include_probabilities else []),
        ops=sorted(set(ops)), gpu_delegate=gpu_delegate_report(data)))
    return path


def run_tflite(model, images):
    """Run a TFLite model's serving_default signature on a batch, image by image.

    Args:
      model: path to a .tflite file, or its bytes.
      images: float32 [N, H, W, 3] RGB 0-255 at the model's input size.

    Returns:
      dict of stacked outputs, e.g. labels int32 [N, H, W].
    """
    runner = _interpreter(model).get_signature_runner("serving_default")
    outputs = {}
    for image in np.asarray(images, np.float32):
        for key, value in runner(images=image[None]).items():
            outputs.setdefault(key, []).append(value[0])
    return {key: np.stack(values) for key, values in outputs.items()}
