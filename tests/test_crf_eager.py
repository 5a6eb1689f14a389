"""Eager CRF calls run a compiled graph: same numbers and gradients as the
same call in tf.function, no retracing for other image sizes, sparse form."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.crf import DenseCRF, dense_crf, portable_ops
from deeplab_keras.crf.testing import coarse_logits, make_scene, rounding_bound
from tests.helpers import ops_run


crf_module = importlib.import_module("deeplab_keras.crf.dense_crf")


@pytest.fixture(autouse=True)
def compile_at_once(monkeypatch):
    """Compile from the first eager call (by default the first runs op by op)."""
    monkeypatch.setattr(crf_module, "_EAGER_CALLS", 0)


def _case(h, w, c, seed=0):
    image, labels = make_scene(h, w, c, seed=seed, num_shapes=4)
    return tf.constant(image[None]), tf.constant(coarse_logits(labels, c, seed=seed)[None])


def test_eager_equals_tf_function_and_op_by_op(monkeypatch):
    images, logits = _case(30, 40, 4)
    layer = DenseCRF(iterations=2)
    compiled = layer(images, logits).numpy()
    graph = tf.function(layer)(images, logits).numpy()
    monkeypatch.setattr(crf_module, "_EAGER_CALLS", 10**9)
    op_by_op = layer(images, logits).numpy()
    # The same ops; Grappler may fold a constant chain differently at a
    # known size, or not at all op by op (rounding only).
    np.testing.assert_allclose(compiled, graph, atol=rounding_bound(logits, 2))
    np.testing.assert_allclose(compiled, op_by_op, atol=rounding_bound(logits, 2))


def test_first_call_runs_op_by_op_then_compiles(monkeypatch):
    monkeypatch.setattr(crf_module, "_EAGER_CALLS", 1)
    images, logits = _case(16, 20, 3)
    before = crf_module.TRACE_COUNT[0]
    dense_crf(images, logits, iterations=1, spatial_sigma=1.5)
    assert crf_module.TRACE_COUNT[0] == before
    dense_crf(images, logits, iterations=1, spatial_sigma=1.5)
    assert crf_module.TRACE_COUNT[0] == before + 1


def test_other_sizes_do_not_retrace():
    layer = DenseCRF(iterations=1, bilateral_color_sigma=4.5)  # parameters no other test compiles
    before = crf_module.TRACE_COUNT[0]
    first = layer(*_case(20, 30, 3))
    traced = crf_module.TRACE_COUNT[0] - before
    second = layer(*_case(17, 45, 3, seed=1))
    assert traced == 1 and crf_module.TRACE_COUNT[0] - before == 1, "a second size retraced"
    assert first.shape == (1, 20, 30, 3) and second.shape == (1, 17, 45, 3)


def test_gradient_eager_equals_graph():
    images, _ = _case(12, 16, 3, seed=2)
    rs = np.random.RandomState(3)
    logits = tf.constant(rs.normal(0.0, 0.5, (1, 12, 16, 3)).astype(np.float32))  # soft: a gradient to compare
    weights = tf.constant(rs.normal(size=(1, 12, 16, 3)).astype(np.float32))

    def grad():
        with tf.GradientTape() as tape:
            tape.watch(logits)
            q = dense_crf(images, logits, iterations=2, bilateral_spatial_sigma=5.0)
            loss = tf.reduce_sum(q * weights)
        return tape.gradient(loss, logits)

    eager = grad().numpy()
    graph = tf.function(grad)().numpy()
    scale = np.abs(eager).max()
    assert scale > 0.1 and np.all(np.isfinite(eager))
    # The backward pass is the forward ops transposed: the same rounding
    # argument as the forward, at the gradient's scale.
    np.testing.assert_allclose(eager, graph, atol=rounding_bound(logits, 2) * scale)


def test_eager_call_runs_the_sparse_form():
    images, logits = _case(24, 32, 3, seed=4)
    assert "SparseTensorDenseMatMul" in ops_run(lambda: DenseCRF(iterations=1)(images, logits))
    with portable_ops():
        ops = ops_run(lambda: dense_crf(images, logits, iterations=1))
    assert "SparseTensorDenseMatMul" not in ops and ops & {"ScatterNd", "TensorScatterAdd"}, sorted(ops)


def test_eager_errors_stay_value_errors():
    images, logits = _case(8, 10, 3)
    with pytest.raises(ValueError, match="too small.*bilateral_spatial_sigma=0.001"):
        dense_crf(images, logits, bilateral_spatial_sigma=0.001, bilateral_color_sigma=0.001)
    bad = logits.numpy()
    bad[0, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="contain 1 NaN or Inf"):
        DenseCRF()(images, bad)


@pytest.mark.parametrize("spatial_kernel", ["exact", "lattice"])
def test_static_graph_sums_two_images_at_a_time(spatial_kernel):
    """With static sizes, Grappler's memory optimizer rewrites a float AddN of
    more than two inputs (ours, or one its arithmetic optimizer makes from an
    Add chain) into TemporaryVariable + AssignAdd when it expects memory
    pressure (0.16 s per call at 480x640x41). After Grappler's arithmetic
    pass, the sparse CRF's per-iteration sum (logits, bilateral and spatial
    terms) must still be two-input adds."""
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import item as grappler_item
    from tensorflow.python.grappler import tf_optimizer

    h, w, c = 24, 32, 5
    layer = DenseCRF(iterations=2, implementation="sparse", spatial_kernel=spatial_kernel)
    concrete = tf.function(lambda a, b: layer(a, b)).get_concrete_function(
        tf.TensorSpec([1, h, w, 3], tf.uint8), tf.TensorSpec([1, h, w, c], tf.float32))
    meta = tf.compat.v1.train.export_meta_graph(graph_def=concrete.graph.as_graph_def(),
                                                graph=concrete.graph)
    meta.collection_def["train_op"].node_list.value.extend(t.name for t in concrete.outputs)
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.optimizers.extend(["arithmetic"])
    config.graph_options.rewrite_options.min_graph_nodes = -1
    optimized = meta_graph_pb2.MetaGraphDef()
    optimized.CopyFrom(meta)
    optimized.graph_def.CopyFrom(tf_optimizer.OptimizeGraph(config, meta))
    shapes = grappler_item.Item(optimized).GetOpProperties()
    # Sums of class scores ([1, H, W, C] or [H*W, C]); the lattice build's
    # sums over the d + 1 vertices are [P] vectors, computed once.
    class_sums = [(n.name, sum(not i.startswith("^") for i in n.input))
                  for n in optimized.graph_def.node
                  if n.op == "AddN" and [d.size for d in shapes[n.name][0].shape.dim][-1:] == [c]]
    assert class_sums, "expected the per-iteration sums in the optimised graph"
    assert all(count <= 2 for _, count in class_sums), class_sums
