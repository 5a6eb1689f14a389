"""The CRF alone and a DeepLab model followed by the CRF, traced plainly as a
user would (no context manager, default implementation), convert to TFLite
(builtin ops only) and ONNX (tf2onnx), and the converted graphs give the same
labels as TensorFlow; TensorFlow itself runs the sparse form of that graph.

Conversions are slow, so each is done once per module at a small fixed size
(48x64; a fixed size is what TFLite needs anyway, see DESIGN.md section 5).
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.crf import DenseCRF, dense_crf, portable_ops
from deeplab_keras.crf.testing import canonical_structure, coarse_logits, make_scene, rounding_bound
from tests.helpers import ops_run
from deeplab_keras.models import build_model, resize_logits
from deeplab_keras.preprocessing import preprocess_images

H, W, C = 48, 64, 3


def _tflite(fn):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex
    return converter.convert()


def _interpreter(model_bytes, feeds):
    """A LiteRT interpreter that has run the model on feeds."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], feeds[_input_key(detail["name"], feeds)])
    interpreter.invoke()
    return interpreter


def _run_tflite(model_bytes, feeds):
    interpreter = _interpreter(model_bytes, feeds)
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    return out, ops


def _onnx(fn):
    import tf2onnx

    model, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17)
    return model


def _run_onnx(model, feeds):
    """The first output."""
    return next(iter(_run_onnx_outputs(model, feeds).values()))


def _run_onnx_outputs(model, feeds):
    """All outputs, by name (a converted function's dict keys)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name: feeds[_input_key(i.name, feeds)] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


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
    """tf.function(images uint8, logits) -> probabilities, traced plainly."""
    crf = DenseCRF()  # implementation="auto"

    @tf.function(input_signature=[tf.TensorSpec([1, H, W, 3], tf.uint8, name="images"),
                                  tf.TensorSpec([1, H, W, C], tf.float32, name="logits")])
    def serve(images, logits):
        return crf(images, logits)

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

    # TFLite only: tf2onnx of the model with the CRF is covered by
    # tests/test_export.py (the export path) and of the plain-traced CRF above.
    return serve, _tflite(serve)


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
        assert {"Unique", "ScatterND", "Gather", "If"} <= ops, sorted(ops)

    def test_converted_graph_equals_sparse_path(self, crf_alone, sample):
        # The graph that was converted computes what the sparse CRF computes.
        serve, _, _ = crf_alone
        image, logits = sample
        # The same ops (TensorFlow swaps the sparse form in): rounding only.
        np.testing.assert_allclose(serve(image, logits).numpy(),
                                   dense_crf(image, logits, implementation="sparse").numpy(),
                                   atol=rounding_bound(logits, 10))

    def test_tensorflow_runs_the_sparse_form_of_the_default_graph(self, crf_alone, sample):
        serve, _, _ = crf_alone
        image, logits = sample
        ops = ops_run(serve, tf.constant(image), tf.constant(logits))
        assert "SparseTensorDenseMatMul" in ops, sorted(ops)
        assert "TensorScatterAdd" not in ops, sorted(ops)

    def test_portable_ops_context_traces_the_portable_form_only(self, sample):
        @tf.function(input_signature=[tf.TensorSpec([1, H, W, 3], tf.uint8),
                                      tf.TensorSpec([1, H, W, C], tf.float32)])
        def serve(images, logits):
            return dense_crf(images, logits, iterations=2)

        with portable_ops():
            concrete = serve.get_concrete_function()
        library_ops = {node.op for f in concrete.graph.as_graph_def().library.function for node in f.node_def}
        assert "SparseTensorDenseMatMul" not in library_ops
        # TensorFlow's scatter sums repeated indices, so the splat's run-time
        # switch takes the ScatterNd branch.
        ran = ops_run(serve, *map(tf.constant, sample))
        assert "ScatterNd" in ran and "TensorScatterAdd" not in ran, sorted(ran)

    def test_portable_form_has_a_gpu_kernel_for_every_op(self):
        # The portable form is what TensorFlow runs on a GPU (the sparse form
        # is preferred on CPUs only). Every op of it, with its dtypes, must
        # have a GPU (or device-default) kernel, or TensorFlow would place it
        # on the CPU and copy tensors back and forth. Checked against the
        # kernel registry of the installed TensorFlow (no GPU needed); only
        # the assertion messages (string constants) stay on the host.
        from tensorflow.python.framework import kernels

        @tf.function(input_signature=[tf.TensorSpec([1, H, W, 3], tf.uint8),
                                      tf.TensorSpec([1, H, W, C], tf.float32)], autograph=False)
        def serve(images, logits):
            return dense_crf(images, logits, iterations=2)

        def gpu_kernel(node):
            for kernel in kernels.get_registered_kernels_for_op(node.op).kernel:
                if kernel.device_type not in ("GPU", "DEFAULT"):
                    continue
                if all(node.attr[c.name].type in c.allowed_values.list.type
                       for c in kernel.constraint if c.allowed_values.list.type and c.name in node.attr):
                    return True
            return False

        with portable_ops():
            graph_def = serve.get_concrete_function().graph.as_graph_def()
        # The graph and the functions it calls (the splat's tf.cond branches).
        nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
        nodes = [n for n in nodes if n.op not in ("Placeholder", "NoOp")]
        assert {"Unique", "TensorScatterAdd", "ScatterNd", "GatherV2", "StatelessIf"} <= {n.op for n in nodes}
        missing = sorted({f"{n.op}({n.attr['dtype'].type if 'dtype' in n.attr else ''})" for n in nodes
                          if not gpu_kernel(n) and not (n.op == "Const" and n.attr["dtype"].type == tf.string)})
        assert not missing, missing

    def test_splat_switch_picks_the_summing_scatter_where_it_sums(self):
        # The portable splat switches at run time on a probe scatter: LiteRT
        # sums repeated indices like TF (one SCATTER_ND per splat), ONNX
        # Runtime keeps one value (tensor_scatter_nd_add, ScatterND "add").
        from deeplab_keras.crf.permutohedral import _scatter_sums

        @tf.function(input_signature=[tf.TensorSpec([5, 5], tf.float32, name="features")])
        def sums(features):
            return tf.cast(_scatter_sums(features), tf.int32)

        feeds = {"features": np.random.RandomState(0).uniform(-9, 9, (5, 5)).astype(np.float32)}
        assert int(sums(feeds["features"])) == 1
        assert int(_run_tflite(_tflite(sums), feeds)[0]) == 1
        assert int(_run_onnx(_onnx(sums), feeds)) == 0

    def test_plain_trace_splats_with_one_scatter_in_tflite(self, crf_alone, sample):
        # The plain trace runs the splat as SCATTER_ND inside an IF (the
        # tensor_scatter_nd_add expansion sits in the branch LiteRT never
        # takes), as fast as portable_ops("tflite") (what export_tflite
        # uses, no IF); same numbers.
        from ai_edge_litert.interpreter import Interpreter

        serve, plain_model, _ = crf_alone

        @tf.function(input_signature=serve.input_signature)
        def serve_tflite(images, logits):
            return dense_crf(images, logits)

        with portable_ops("tflite"):
            tflite_model = _tflite(serve_tflite)
        image, logits = sample
        feeds = {"images": image, "logits": logits}
        got, _ = _run_tflite(tflite_model, feeds)
        plain, _ = _run_tflite(plain_model, feeds)
        # Both splat with SCATTER_ND in LiteRT; the rest is the same graph.
        np.testing.assert_allclose(got, plain, atol=rounding_bound(logits, 10))

        def count(model, name):
            return sum(d["op_name"] == name for d in Interpreter(model_content=model)._get_ops_details())

        # 1 normalisation filter + 10 iterations, and the vertex dedupe
        # (tf.unique or the scatter-built table, on the same probe).
        assert count(plain_model, "IF") == 11 + 1 and count(tflite_model, "IF") == 0
        assert count(plain_model, "GATHER_ND") == count(tflite_model, "GATHER_ND") == 0
        # The export form: 11 splats outside any IF, no run-time probe, and
        # the "-" neighbour table inverted by UNSORTED_SEGMENT_MAX instead of
        # a scatter (tf2onnx, which the plain trace must also serve, has no
        # useful lowering of it).
        # Plain: the probe, 3 for the neighbour hash table, 1 for the "-"
        # table (the 11 splats are inside the IFs). Export form: 2 for the
        # vertex dedupe by hashing (UNSORTED_SEGMENT_MIN, which tf2onnx has
        # no useful lowering for, in place of a UNIQUE over all vertex keys),
        # 1 for the neighbour search in the dedupe's table, the "-" table by
        # UNSORTED_SEGMENT_MAX, and the 11 splats.
        assert count(plain_model, "SCATTER_ND") == 1 + 3 + 1
        assert count(tflite_model, "SCATTER_ND") == 2 + 1 + 11
        assert count(tflite_model, "UNSORTED_SEGMENT_MAX") == count(tflite_model, "UNSORTED_SEGMENT_MIN") == 1
        assert count(plain_model, "UNSORTED_SEGMENT_MAX") == count(plain_model, "UNSORTED_SEGMENT_MIN") == 0

        # No per-vertex table was folded into a constant (a tf.range over the
        # H*W*(d+1) vertex entries once was: 6 MiB at 513x513).
        for model in (plain_model, tflite_model):
            interpreter = Interpreter(model_content=model)
            for detail in interpreter.get_tensor_details():
                if int(np.prod(detail["shape"])) == H * W * 6:
                    with pytest.raises(ValueError):  # not a constant: no data before it runs
                        interpreter.get_tensor(detail["index"])

    def test_converted_hash_table_resolves_shared_buckets(self, monkeypatch, sample):
        # The blur-neighbour hash table is built with plain scatters, which
        # sum repeated indices in TF and LiteRT and keep one of their values
        # in ONNX Runtime. With a 7-bucket table nearly every bucket is
        # shared, so both behaviours are exercised; the converted tables must
        # equal the sparse form's (found in its dedupe's table, in TF).
        from deeplab_keras.crf import build_lattice, permutohedral
        from deeplab_keras.crf.dense_crf import _bilateral_features

        image = sample[0][:, :16, :20].astype(np.float32)
        features = _bilateral_features(tf.constant(image), 5.0, 3.0)
        # The lattice points are numbered differently by each dedupe
        # (tf.unique in LiteRT, the scatter-built table in ONNX Runtime, the
        # segment-min table in the sparse form): compare renumbered in order
        # of first occurrence.
        sparse = build_lattice(features, implementation="sparse")
        expected = canonical_structure(sparse.offsets, sparse.neighbours)
        monkeypatch.setattr(permutohedral, "_TABLE_SIZE", 7)

        @tf.function(input_signature=[tf.TensorSpec(features.shape, tf.float32, name="features")])
        def structure(features):
            lattice = build_lattice(features, implementation="portable")
            return {"offsets": lattice.offsets, "neighbours": lattice.neighbours}

        feeds = {"features": features.numpy()}
        # TFLite output names do not carry the dict keys; the ranks tell them apart.
        interpreter = _interpreter(_tflite(structure), feeds)
        by_rank = {len(d["shape"]): interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
        got_tflite = {"offsets": by_rank[2], "neighbours": by_rank[3]}
        got_onnx = _run_onnx_outputs(_onnx(structure), feeds)
        assert expected[1].shape[1] > 100
        for got in (got_tflite, got_onnx):
            offsets, neighbours = canonical_structure(got["offsets"], got["neighbours"])
            np.testing.assert_array_equal(offsets, expected[0])
            np.testing.assert_array_equal(neighbours, expected[1])

    @pytest.mark.parametrize("table_size", [1, 7, 4194301])
    def test_dedupe_by_the_onnx_scatter(self, monkeypatch, table_size):
        # In ONNX Runtime the portable form deduplicates the vertex keys in
        # a table built with a plain ScatterND, which keeps one of the
        # positions written to a bucket (TF sums them, so this runs only
        # converted). With 1 or 7 buckets (N / 64 = 28 at the least) nearly
        # every key is in a shared bucket.
        from deeplab_keras.crf import permutohedral

        rng = np.random.default_rng(table_size)
        keys = rng.choice(rng.integers(0, 2**60, 300), 1800)
        monkeypatch.setattr(permutohedral, "_TABLE_SIZE", table_size)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="keys")])
        def dedupe(keys):
            points, index, _ = permutohedral._unique_by_hashing(keys, winning_scatter=True)
            return {"points": points, "index": index}

        got = _run_onnx_outputs(_onnx(dedupe), {"keys": keys})
        assert len(got["points"]) == len(set(got["points"].tolist())) == len(set(keys.tolist()))
        np.testing.assert_array_equal(got["points"][got["index"]], keys)

    def test_explicit_sparse_graph_refuses_tflite_loudly(self):
        # implementation="sparse" uses SparseTensorDenseMatMul, which has no
        # builtin: conversion must fail, not silently need Flex.
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.uint8),
                                      tf.TensorSpec([1, 8, 8, C], tf.float32)])
        def serve(images, logits):
            return dense_crf(images, logits, iterations=1, implementation="sparse")

        with pytest.raises(Exception, match="SparseTensorDenseMatMul"):
            _tflite(serve)

    def test_gradient_through_the_default_graph(self, sample):
        image, logits = map(tf.constant, sample)

        def loss_grad(implementation):
            with tf.GradientTape() as tape:
                tape.watch(logits)
                q = dense_crf(image, logits, iterations=3, implementation=implementation)
                loss = tf.reduce_sum(q[..., 1] ** 2)
            return tape.gradient(loss, logits)

        graph = tf.function(lambda: loss_grad("auto"))().numpy()
        eager = loss_grad("portable").numpy()
        np.testing.assert_allclose(graph, eager, atol=1e-4 * np.abs(eager).max())

    def test_saved_model_and_keras_model_convert_plainly(self, tmp_path, sample):
        # A Keras model holding the layer: TFLite from the Keras model itself,
        # and a SavedModel that TensorFlow reloads and still runs sparse.
        images = keras.Input((H, W, 3), batch_size=1, name="images")
        logits = keras.Input((H, W, C), batch_size=1, name="logits")
        model = keras.Model([images, logits], DenseCRF(iterations=3)(images, logits))
        image, logit = sample
        expected = model([image.astype(np.float32), logit]).numpy()

        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        got, _ = _run_tflite(converter.convert(), {"images": image.astype(np.float32), "logits": logit})
        assert _agreement(got, expected) >= 0.999

        model.export(str(tmp_path / "crf"), verbose=False)
        serve = tf.saved_model.load(str(tmp_path / "crf")).serve
        args = ([tf.constant(image, tf.float32), tf.constant(logit)],)  # the model's input list
        np.testing.assert_allclose(serve(*args).numpy(), expected, atol=rounding_bound(logit, 3))  # same graph
        assert "SparseTensorDenseMatMul" in ops_run(serve, *args)


class TestModelThenCrf:
    def test_tflite_uses_builtin_ops_only(self, model_then_crf):
        _, tflite_model = model_then_crf
        _, ops = _run_tflite(tflite_model, {"images": np.zeros((1, H, W, 3), np.uint8)})
        assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), sorted(ops)
        assert {"CONV_2D", "RESIZE_BILINEAR", "UNIQUE", "SCATTER_ND"} <= ops, sorted(ops)

    def test_tflite_matches_tensorflow(self, model_then_crf, sample):
        serve, tflite_model = model_then_crf
        image, _ = sample
        expected = serve(image).numpy()
        got, _ = _run_tflite(tflite_model, {"images": image})
        assert _agreement(got, expected) >= 0.999
