"""The CRF alone and a DeepLab model followed by the CRF convert to TFLite
(builtin ops only) and ONNX (tf2onnx), and the converted graphs give the same
labels as TensorFlow.

Conversions are slow, so each is done once per module at a small fixed size
(48x64; a fixed size is what TFLite needs anyway, see DESIGN.md section 5).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.crf import DenseCRF, dense_crf, portable_ops
from deeplab_keras.crf.testing import coarse_logits, make_scene
from deeplab_keras.models import build_model, resize_logits
from deeplab_keras.preprocessing import preprocess_images

H, W, C = 48, 64, 3


def _tflite(fn):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex
    return converter.convert()


def _run_tflite(model_bytes, feeds):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], feeds[_input_key(detail["name"], feeds)])
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    return out, ops


def _onnx(fn):
    import tf2onnx

    model, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17)
    return model


def _run_onnx(model, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name: feeds[_input_key(i.name, feeds)] for i in session.get_inputs()}
    return session.run(None, inputs)[0]


def _input_key(name, feeds):
    matches = [k for k in feeds if k in name]
    assert len(matches) == 1, (name, list(feeds))
    return matches[0]


@pytest.fixture(scope="module")
def sample():
    image, labels = make_scene(H, W, C, seed=11, num_shapes=4)
    return image[None], coarse_logits(labels, C, seed=12)[None]


@pytest.fixture(scope="module")
def crf_alone():
    """tf.function(images uint8, logits) -> probabilities, traced portable."""
    crf = DenseCRF()  # implementation="auto": portable while tracing below

    @tf.function(input_signature=[tf.TensorSpec([1, H, W, 3], tf.uint8, name="images"),
                                  tf.TensorSpec([1, H, W, C], tf.float32, name="logits")])
    def serve(images, logits):
        return crf(images, logits)

    with portable_ops():
        serve.get_concrete_function()
        return serve, _tflite(serve), _onnx(serve)


@pytest.fixture(scope="module")
def model_then_crf():
    """RGB uint8 image -> VGG16-LargeFOV (1/8 width) -> bilinear logits -> CRF."""
    keras.utils.set_random_seed(0)
    model = build_model("vgg16_largefov", num_classes=C, width_multiplier=0.125, dropout=0.0)

    @tf.function(input_signature=[tf.TensorSpec([1, H, W, 3], tf.uint8, name="images")])
    def serve(images):
        logits = resize_logits(model(preprocess_images(images), training=False), (H, W))
        return dense_crf(images, logits)

    with portable_ops():
        serve.get_concrete_function()
        return serve, _tflite(serve), _onnx(serve)


def _agreement(a, b):
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


class TestCrfAlone:
    def test_tflite_uses_builtin_ops_only(self, crf_alone):
        _, tflite_model, _ = crf_alone
        image, logits = np.zeros((1, H, W, 3), np.uint8), np.zeros((1, H, W, C), np.float32)
        _, ops = _run_tflite(tflite_model, {"images": image, "logits": logits})
        assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), sorted(ops)
        assert {"UNIQUE", "SCATTER_ND", "GATHER", "DEPTHWISE_CONV_2D", "SOFTMAX"} <= ops, sorted(ops)

    def test_tflite_matches_tensorflow(self, crf_alone, sample):
        serve, tflite_model, _ = crf_alone
        image, logits = sample
        expected = serve(image, logits).numpy()
        got, _ = _run_tflite(tflite_model, {"images": image, "logits": logits})
        assert _agreement(got, expected) >= 0.999
        assert np.abs(got - expected).max() < 1e-3

    def test_onnx_matches_tensorflow(self, crf_alone, sample):
        serve, _, onnx_model = crf_alone
        image, logits = sample
        expected = serve(image, logits).numpy()
        got = _run_onnx(onnx_model, {"images": image, "logits": logits})
        assert _agreement(got, expected) >= 0.999
        assert np.abs(got - expected).max() < 1e-3
        ops = {node.op_type for node in onnx_model.graph.node}
        assert {"Unique", "ScatterND", "Gather"} <= ops, sorted(ops)

    def test_converted_graph_equals_default_sparse_path(self, crf_alone, sample):
        # The portable graph that was converted computes what the default
        # (sparse) CRF computes in TensorFlow.
        serve, _, _ = crf_alone
        image, logits = sample
        np.testing.assert_allclose(serve(image, logits).numpy(),
                                   dense_crf(image, logits, implementation="sparse").numpy(), atol=1e-4)


    def test_default_sparse_graph_refuses_tflite_loudly(self):
        # Outside portable_ops() the lattice uses SparseTensorDenseMatMul,
        # which has no builtin: conversion must fail, not silently need Flex.
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.uint8),
                                      tf.TensorSpec([1, 8, 8, C], tf.float32)])
        def serve(images, logits):
            return dense_crf(images, logits, iterations=1)

        with pytest.raises(Exception, match="SparseTensorDenseMatMul"):
            _tflite(serve)


class TestModelThenCrf:
    def test_tflite_uses_builtin_ops_only(self, model_then_crf):
        _, tflite_model, _ = model_then_crf
        _, ops = _run_tflite(tflite_model, {"images": np.zeros((1, H, W, 3), np.uint8)})
        assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), sorted(ops)
        assert {"CONV_2D", "RESIZE_BILINEAR", "UNIQUE", "SCATTER_ND"} <= ops, sorted(ops)

    def test_tflite_matches_tensorflow(self, model_then_crf, sample):
        serve, tflite_model, _ = model_then_crf
        image, _ = sample
        expected = serve(image).numpy()
        got, _ = _run_tflite(tflite_model, {"images": image})
        assert _agreement(got, expected) >= 0.999

    def test_onnx_matches_tensorflow(self, model_then_crf, sample):
        serve, _, onnx_model = model_then_crf
        image, _ = sample
        expected = serve(image).numpy()
        got = _run_onnx(onnx_model, {"images": image})
        assert _agreement(got, expected) >= 0.999
