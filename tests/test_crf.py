"""Dense CRF: exactness, parity with pydensecrf, shapes/modes, gradients, Keras layer.

Numbers quoted in the assertion messages are the measured values, so a failing
run says how far off it was.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.crf import DenseCRF, build_lattice, dense_crf, lattice_filter, portable_ops
from deeplab_keras.crf.dense_crf import _bilateral_features
from deeplab_keras.crf.testing import (FLOAT32_EPS, canonical_structure, coarse_logits, make_scene, mean_iou,
                                       pydensecrf_inference, rounding_bound)

# DeepLab v2 VOC settings (deeplab-pytorch) and the DeepLab v1 VGG script's.
V2 = dict(iterations=10, spatial_weight=3.0, spatial_sigma=1.0, bilateral_weight=4.0,
          bilateral_spatial_sigma=67.0, bilateral_color_sigma=3.0)
V1 = dict(iterations=10, spatial_weight=3.0, spatial_sigma=3.0, bilateral_weight=4.0,
          bilateral_spatial_sigma=49.0, bilateral_color_sigma=5.0)


def ours(image, logits, **kwargs):
    """dense_crf on a single [H, W, 3] image, as NumPy."""
    return dense_crf(image[None], logits[None], **kwargs).numpy()[0]


def brute_force_crf(image, logits, iterations, spatial_weight, spatial_sigma, bilateral_weight,
                    bilateral_spatial_sigma, bilateral_color_sigma):
    """Exact O(N^2) mean-field in float64: the kernels as dense N x N matrices."""
    h, w, c = logits.shape
    yy, xx = np.mgrid[0:h, 0:w]
    pos = np.stack([xx, yy], -1).reshape(-1, 2).astype(np.float64)
    rgb = image.reshape(-1, 3).astype(np.float64)
    dpos = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    dcol = ((rgb[:, None] - rgb[None]) ** 2).sum(-1)

    def normalised(k):
        n = 1.0 / np.sqrt(k.sum(1))
        return n[:, None] * k * n[None]

    kernel = spatial_weight * normalised(np.exp(-0.5 * dpos / spatial_sigma**2))
    kernel += bilateral_weight * normalised(
        np.exp(-0.5 * dpos / bilateral_spatial_sigma**2 - 0.5 * dcol / bilateral_color_sigma**2))

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    x = logits.reshape(-1, c).astype(np.float64)
    unary = np.log(softmax(x))  # -U
    q = softmax(unary)
    for _ in range(iterations):
        q = softmax(unary + kernel @ q)
    return q.reshape(h, w, c)


def softmax_sum_tolerance(num_classes):
    """|sum_k q_k - 1| for a float32 softmax q_k = e_k / S: S carries C eps,
    each quotient 1 more (2 where it multiplies by 1/S), and the float32 sum
    of the C quotients C more: (2C + 4) eps with margin."""
    return (2 * num_classes + 4) * FLOAT32_EPS


def tiny_case(seed):
    image, labels = make_scene(24, 32, 3, seed=seed, num_shapes=3, noise=4.0)
    return image, coarse_logits(labels, 3, seed=seed, stride=4)


class TestExactness:
    def test_spatial_kernel_is_the_exact_gaussian(self):
        image, logits = tiny_case(0)
        settings = dict(V2, bilateral_weight=0.0)
        err = np.abs(ours(image, logits, **settings) - brute_force_crf(image, logits, **settings)).max()
        # Separable convolution, truncated at 4 sigma (exp(-8) of the peak).
        assert err < 1e-4, f"max |ours - exact| = {err:.2e}"

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_full_crf_close_to_brute_force(self, seed):
        image, logits = tiny_case(seed)
        exact = brute_force_crf(image, logits, **V2)
        q = ours(image, logits, **V2)
        ref = pydensecrf_inference(image, logits, **V2)
        err, ref_err = np.abs(q - exact), np.abs(ref - exact)
        agree = np.mean(q.argmax(-1) == exact.argmax(-1))
        # The bilateral kernel is the lattice approximation (as in pydensecrf):
        # measured mean error 0.0009-0.0025, agreement >= 99.6% on these seeds.
        assert err.mean() < 0.005, f"mean |ours - exact| = {err.mean():.4f} (max {err.max():.3f})"
        assert agree >= 0.99, f"label agreement with the exact CRF {agree:.4f}"
        # ... and no worse than the reference's own approximation.
        assert err.mean() <= 1.5 * ref_err.mean() + 1e-4, (
            f"ours {err.mean():.5f} vs pydensecrf {ref_err.mean():.5f} mean error to the exact CRF")

    def test_lattice_kernel_shape_and_reach(self):
        # One red row: the filtered delta falls off with distance like the
        # Gaussian (monotone) and still reaches 150 px = 2.2 sigma_alpha.
        image = np.full((1, 3, 600, 3), [200.0, 30.0, 30.0], np.float32)
        lattice = build_lattice(_bilateral_features(tf.constant(image), 67.0, 3.0))
        delta = np.zeros((3 * 600, 1), np.float32)
        delta[600] = 1.0  # row 1, x = 0
        response = lattice_filter(lattice, tf.constant(delta)).numpy().reshape(3, 600)[1]
        profile = response[[0, 20, 50, 67, 100, 134, 150]]
        assert np.all(np.diff(profile) < 0), profile
        assert profile[-1] > 0.02, profile
        gaussian = np.exp(-0.5 * (np.array([0, 20, 50, 67, 100, 134, 150]) / 67.0) ** 2)
        ratio = profile / profile[0] / gaussian
        assert np.all(ratio > 0.35) and np.all(ratio < 1.05), ratio


    @pytest.mark.parametrize("d", [2, 5])
    def test_key_hash_by_rank_code_equals_the_comparisons(self, monkeypatch, d):
        # Up to d = 5 the vertices' wrapped offsets are rows of a table
        # gathered by the ranks' permutation code; above, per-coordinate
        # comparisons. Both must give the same hash, ties included.
        from deeplab_keras.crf import permutohedral

        rs = np.random.RandomState(d)
        features = np.concatenate([rs.uniform(-40.0, 40.0, (5000, d)), rs.randint(-6, 7, (5000, d))])
        elevated = permutohedral._elevate(tf.constant(features, tf.float32), d)
        rem0, rank, _ = permutohedral._enclosing_simplex(elevated, d)
        coded, deltas = permutohedral._key_hash(rem0, rank, None, d)
        monkeypatch.setattr(permutohedral, "_MAX_CODED_D", d - 1)
        compared, deltas2 = permutohedral._key_hash(rem0, rank, None, d)
        np.testing.assert_array_equal(coded.numpy(), compared.numpy())
        np.testing.assert_array_equal([int(x) for x in deltas], [int(x) for x in deltas2])
        # Each point's d + 1 vertices are distinct lattice points.
        assert all(len(set(row)) == d + 1 for row in coded.numpy()[:200].tolist())

    @pytest.mark.parametrize("by_code", [True, False])
    @pytest.mark.parametrize("kind", ["uniform", "integer_ties"])
    def test_barycentric_weights_equal_the_slot_definition(self, monkeypatch, kind, by_code):
        # The reference's definition puts v_i at slot d - rank_i; up to
        # d = 5 by_slot is gathered by the ranks' code, above it is v sorted
        # ascending. Integer features make many equal residuals, where the
        # rank's tie-break decides the slots.
        from deeplab_keras.crf import permutohedral
        from deeplab_keras.crf.permutohedral import _elevate, _enclosing_simplex

        if not by_code:
            monkeypatch.setattr(permutohedral, "_MAX_CODED_D", 4)
        rs = np.random.RandomState(7)
        d = 5
        if kind == "uniform":
            features = rs.uniform(-40.0, 40.0, (20000, d)).astype(np.float32)
        else:
            features = rs.randint(-6, 7, (20000, d)).astype(np.float32)
        elevated = _elevate(tf.constant(features), d)
        rem0, rank, weights = _enclosing_simplex(elevated, d)
        v = (np.stack([e.numpy() for e in elevated], 1) - np.stack([r.numpy() for r in rem0], 1)) \
            * np.float32(1.0 / (d + 1))
        slot = (d - np.stack([r.numpy() for r in rank], 1)).astype(np.int64)
        assert np.all(np.sort(slot, axis=1) == np.arange(d + 1)), "slots are not a permutation"
        by_slot = np.zeros_like(v)
        np.put_along_axis(by_slot, slot, v, axis=1)
        expected = by_slot - np.roll(by_slot, 1, axis=1)
        expected[:, 0] += 1.0
        np.testing.assert_array_equal(weights.numpy(), expected)
        assert weights.numpy().min() >= 0.0


@pytest.fixture(scope="module")
def scene():
    num_classes = 6
    image, labels = make_scene(210, 300, num_classes, seed=3, num_shapes=14)
    logits = coarse_logits(labels, num_classes, seed=4)
    return image, labels, logits, num_classes


class TestPydensecrfParity:
    def test_bilateral_lattice_is_the_reference_lattice(self, scene):
        image, _, logits, _ = scene
        settings = dict(V2, spatial_weight=0.0)
        diff = np.abs(ours(image, logits, **settings) - pydensecrf_inference(image, logits, **settings))
        # Same lattice, same normalisation: float32 round-off only (measured ~3e-5).
        assert diff.max() < 1e-3, f"max |ours - pydensecrf| = {diff.max():.2e}"

    @pytest.mark.parametrize("settings", [V2, V1], ids=["deeplab_v2", "deeplab_v1"])
    def test_matches_pydensecrf(self, scene, settings):
        image, _, logits, _ = scene
        q = ours(image, logits, **settings)
        ref = pydensecrf_inference(image, logits, **settings)
        agree = np.mean(q.argmax(-1) == ref.argmax(-1))
        mad = np.abs(q - ref).mean()
        assert agree >= 0.98, f"label agreement {agree:.5f}"
        # Only the spatial kernel differs (exact here, lattice in pydensecrf).
        assert mad < 2e-3, f"mean |dQ| = {mad:.2e}"

    @pytest.mark.parametrize("bilateral_weight", [4.0, 0.0], ids=["both_kernels", "spatial_only"])
    def test_lattice_spatial_kernel_is_the_reference(self, scene, bilateral_weight):
        """spatial_kernel="lattice" is pydensecrf's addPairwiseGaussian: with it
        both kernels are the reference's lattices, so only float32 round-off is
        left (max |dQ| measured 4e-5 with both kernels), where the exact kernel
        leaves ~1e-3 on average."""
        image, _, logits, _ = scene
        settings = dict(V2, bilateral_weight=bilateral_weight)
        ref = pydensecrf_inference(image, logits, **settings)
        q = ours(image, logits, spatial_kernel="lattice", **settings)
        diff = np.abs(q - ref)
        assert diff.max() < 1e-3, f"max |ours - pydensecrf| = {diff.max():.2e}"
        exact = np.abs(ours(image, logits, **settings) - ref)
        assert exact.mean() > 10 * diff.mean(), f"mean |dQ| exact {exact.mean():.2e}, lattice {diff.mean():.2e}"
        portable = ours(image, logits, spatial_kernel="lattice", implementation="portable", **settings)
        np.testing.assert_allclose(q, portable, atol=rounding_bound(logits, V2["iterations"]))

    def test_bad_spatial_kernel_is_refused_by_name(self):
        with pytest.raises(ValueError, match="spatial_kernel.*'gaussian'"):
            DenseCRF(spatial_kernel="gaussian")
        with pytest.raises(ValueError, match="spatial_kernel"):
            dense_crf(tf.zeros([1, 8, 8, 3]), tf.zeros([1, 8, 8, 2]), spatial_kernel=None)

    def test_coarse_unary_gain(self, scene):
        image, labels, logits, num_classes = scene
        before = mean_iou(logits.argmax(-1), labels, num_classes)
        gain = mean_iou(ours(image, logits, **V2).argmax(-1), labels, num_classes) - before
        ref_gain = mean_iou(pydensecrf_inference(image, logits, **V2).argmax(-1), labels, num_classes) - before
        assert ref_gain > 0.01, f"pydensecrf gain {ref_gain:.4f} (scene too easy?)"
        assert gain >= 0.9 * ref_gain, f"mIoU gain ours {gain:.4f} vs pydensecrf {ref_gain:.4f}"

    def test_implementations_agree(self, scene):
        image, _, logits, _ = scene
        sparse = ours(image, logits, implementation="sparse", **V2)
        portable = ours(image, logits, implementation="portable", **V2)
        tflite = ours(image, logits, implementation="tflite", **V2)
        with portable_ops():
            auto = ours(image, logits, implementation="auto", **V2)
        with portable_ops("tflite"):
            auto_tflite = ours(image, logits, implementation="auto", **V2)
        # The same lattice and weights; the forms differ in how the splat and
        # slice sums are ordered (sparse matmul rows, scatter-add, segment
        # sums), i.e. in rounding only (equal bit for bit on Zen 4).
        bound = rounding_bound(logits, V2["iterations"])
        np.testing.assert_allclose(sparse, portable, atol=bound)
        np.testing.assert_allclose(tflite, portable, atol=bound)
        # The first eager call of a kind runs op by op, the next ones compiled
        # (rounding only); test_crf_eager checks which ops portable_ops runs.
        np.testing.assert_allclose(auto, portable, atol=bound)
        np.testing.assert_allclose(auto_tflite, tflite, atol=bound)

    def test_lattice_structures_agree(self, scene):
        # The portable form numbers the lattice points with tf.unique and
        # finds the "+" blur neighbours in a scatter-built table of the
        # points; the sparse and "tflite" forms do both with one table of
        # first occurrences of the vertex keys (unsorted_segment_min). The
        # "-" table is the inverse of the "+" one, by a scatter (portable) or
        # by unsorted_segment_max. The same lattice up to the numbering.
        image = scene[0]
        features = _bilateral_features(tf.constant(image[None], tf.float32), 67.0, 3.0)
        portable = build_lattice(features, implementation="portable")
        num_points = int(portable.num_points)
        assert num_points > 1000
        assert (portable.neighbours.numpy()[:, :num_points] < num_points).mean() > 0.5  # most exist
        offsets, neighbours = canonical_structure(portable.offsets, portable.neighbours)
        np.testing.assert_array_equal(offsets, portable.offsets.numpy())  # tf.unique's numbering
        np.testing.assert_array_equal(neighbours, portable.neighbours.numpy())
        for implementation in ("sparse", "tflite"):
            other = build_lattice(features, implementation=implementation)
            assert int(other.num_points) == num_points
            np.testing.assert_array_equal(other.weights.numpy(), portable.weights.numpy())
            got_offsets, got_neighbours = canonical_structure(other.offsets, other.neighbours)
            np.testing.assert_array_equal(got_offsets, offsets)
            np.testing.assert_array_equal(got_neighbours, neighbours)

    @pytest.mark.parametrize("table_size", [1, 7, 101])
    def test_hash_table_collisions_resolve_exactly(self, scene, monkeypatch, table_size):
        # With a tiny table (M / 64 buckets, the floor the code keeps, for
        # sizes 1 and 7) every bucket is shared, so the fallback tf.unique
        # decides the queries; the real-size test above has mostly
        # single-point buckets, where a wrong key must not match.
        from deeplab_keras.crf import permutohedral

        # The sparse and "tflite" forms also deduplicate the vertex keys in
        # a table of this size (M / 64 buckets at the least).
        image = scene[0][:24, :32]
        features = _bilateral_features(tf.constant(image[None], tf.float32), 5.0, 3.0)
        portable = build_lattice(features, implementation="portable")
        expected = canonical_structure(portable.offsets, portable.neighbours)
        monkeypatch.setattr(permutohedral, "_TABLE_SIZE", table_size)
        for implementation in ("portable", "sparse", "tflite"):
            lattice = build_lattice(features, implementation=implementation)
            got = canonical_structure(lattice.offsets, lattice.neighbours)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])

    @pytest.mark.parametrize("table_size", [1, 7, 4194301])
    def test_unique_by_hashing_is_unique(self, monkeypatch, table_size):
        # Keys with many repeats; with 1 or 7 buckets (the table keeps at
        # least N / 64 = 28) nearly every key is "lost" to the fallback.
        from deeplab_keras.crf import permutohedral

        rng = np.random.default_rng(table_size)
        keys = rng.choice(rng.integers(0, 2**60, 300), 1800)
        monkeypatch.setattr(permutohedral, "_TABLE_SIZE", table_size)
        points, index, find = permutohedral._unique_by_hashing(tf.constant(keys, tf.int64))
        points, index = points.numpy(), index.numpy()
        expected_points, expected_index = (t.numpy() for t in tf.unique(tf.constant(keys, tf.int64)))
        assert len(points) == len(set(points.tolist())) == len(expected_points)
        np.testing.assert_array_equal(points[index], keys)
        if table_size > len(keys):  # (almost) no shared bucket: tf.unique's order
            np.testing.assert_array_equal(points, expected_points)
            np.testing.assert_array_equal(index, expected_index)
        # The same table finds query keys: present ones, absent ones that
        # share a bucket with present ones (key + table size), absent others.
        size = max(len(keys) // 64, table_size)
        queries = np.concatenate([points[::-1], points + size, rng.integers(0, 2**60, 500), points[:3]])
        got = find(tf.constant(queries, tf.int64), tf.constant(-7)).numpy()
        position = {int(k): i for i, k in enumerate(points)}
        np.testing.assert_array_equal(got, [position.get(int(k), -7) for k in queries])
        empty = permutohedral._unique_by_hashing(tf.zeros([0], tf.int64))
        assert empty[0].shape == (0,) and empty[1].shape == (0,)

    def test_many_classes_take_the_chunked_sparse_filter(self):
        # >= 32 classes run the sparse filter in column chunks (the kernel's
        # vectorised path is slower); the chunks must add up to the whole.
        from deeplab_keras.crf.filtering import _column_chunks

        assert _column_chunks(37) == [20, 17] and _column_chunks(41) == [21, 20]
        image, labels = make_scene(30, 40, 37, seed=5, num_shapes=12)
        logits = coarse_logits(labels, 37, seed=6)
        sparse = ours(image, logits, implementation="sparse", **V2)
        portable = ours(image, logits, implementation="portable", **V2)
        np.testing.assert_allclose(sparse, portable, atol=rounding_bound(logits, V2["iterations"]))

    def test_portable_ops_rejects_an_unknown_target(self):
        with pytest.raises(ValueError, match="onnx"):
            with portable_ops("onnx"):
                pass


class TestFullyConnected:
    @staticmethod
    def far_scene(far_colour):
        """Red patch A (class 1, confident); 120 px to its right a small patch
        B that weakly prefers class 0; green class-0 background."""
        image = np.zeros((40, 200, 3), np.uint8)
        image[:] = (30, 160, 40)
        image[5:35, 5:35] = (200, 30, 30)
        image[18:22, 138:142] = far_colour
        logits = np.zeros((40, 200, 2), np.float32)
        logits[..., 0] = 3.0
        logits[5:35, 5:35] = (0.0, 3.0)
        logits[18:22, 138:142] = (0.3, 0.0)
        return image, logits

    def test_same_colour_far_away_pulls_label(self):
        q = ours(*self.far_scene((200, 30, 30)), **V2)
        assert q[18:22, 138:142, 1].min() > 0.6, q[18:22, 138:142, 1]

    def test_different_colour_far_away_does_not(self):
        q = ours(*self.far_scene((30, 30, 200)), **V2)
        assert q[18:22, 138:142, 1].max() < 0.1, q[18:22, 138:142, 1]


class TestShapesAndModes:
    def test_batch_equals_per_image(self):
        images, logits = [], []
        for seed in (0, 1):
            image, labels = make_scene(40, 56, 4, seed=seed, num_shapes=4)
            images.append(image)
            logits.append(coarse_logits(labels, 4, seed=seed))
        for implementation in ("sparse", "portable"):
            batch = dense_crf(np.stack(images), np.stack(logits), implementation=implementation).numpy()
            for i in range(2):
                single = ours(images[i], logits[i], implementation=implementation)
                # One lattice keyed by image id: each image's sums hold the
                # same terms, maybe in another order (rounding only).
                np.testing.assert_allclose(batch[i], single, atol=rounding_bound(logits[i], 10))

    def test_graph_mode_unknown_shapes(self):
        fn = tf.function(
            lambda im, lg: dense_crf(im, lg, iterations=3),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                             tf.TensorSpec([None, None, None, None], tf.float32)])
        for (h, w, c) in [(30, 44, 3), (25, 17, 5)]:
            image, labels = make_scene(h, w, c, seed=h)
            logits = coarse_logits(labels, c, seed=w)
            # The same ops on bit-identical features (see _bilateral_features:
            # a 1-ulp feature change alone moved Q by 1.03e-5); Grappler may
            # fold a few constant chains differently with unknown shapes.
            np.testing.assert_allclose(fn(image[None], logits[None]).numpy()[0],
                                       ours(image, logits, iterations=3), atol=rounding_bound(logits, 3))

    @pytest.mark.parametrize("num_classes", [2, 7])
    def test_output_is_a_distribution(self, num_classes):
        image, labels = make_scene(20, 30, num_classes, seed=num_classes)
        q = ours(image, coarse_logits(labels, num_classes), **V2)
        assert q.shape == (20, 30, num_classes) and q.dtype == np.float32
        assert np.all(q >= 0) and np.all(q <= 1)
        np.testing.assert_allclose(q.sum(-1), 1.0, atol=softmax_sum_tolerance(num_classes))

    def test_float_and_uint8_images_agree(self):
        image, labels = make_scene(20, 30, 3, seed=5)
        logits = coarse_logits(labels, 3)
        # The CRF casts uint8 to float32 first: the same values, the same ops.
        np.testing.assert_array_equal(ours(image.astype(np.float32), logits), ours(image, logits))

    def test_zero_iterations_is_softmax(self):
        image, labels = make_scene(12, 16, 3, seed=6)
        logits = coarse_logits(labels, 3)
        # One softmax either way: a few ulps of 1 at most.
        np.testing.assert_allclose(ours(image, logits, iterations=0), tf.nn.softmax(logits).numpy(),
                                   atol=rounding_bound(logits, 0))


class TestGradients:
    @pytest.mark.parametrize("implementation", ["sparse", "portable"])
    def test_gradient_matches_numerical(self, implementation):
        # Soft logits (|logit| ~ 0.5): saturated ones would give near-zero
        # gradients that any check passes.
        image, _ = make_scene(6, 8, 3, seed=7, num_shapes=2)
        rs = np.random.RandomState(0)
        logits = tf.constant(rs.normal(0.0, 0.5, (1, 6, 8, 3)).astype(np.float32))
        weights = tf.constant(rs.normal(size=(1, 6, 8, 3)).astype(np.float32))

        @tf.function  # traced once: compute_gradient evaluates it 2 x 144 times
        def objective(x):
            q = dense_crf(image[None], x, iterations=3, bilateral_spatial_sigma=5.0,
                          implementation=implementation)
            return tf.reduce_sum(q * weights)

        theoretical, numerical = tf.test.compute_gradient(objective, [logits], delta=3e-3)
        theoretical, numerical = theoretical[0], numerical[0]
        assert np.all(np.isfinite(theoretical))
        scale = np.abs(numerical).max()
        err = np.abs(theoretical - numerical).max()
        # Measured: max |grad| ~6, max error ~1e-3 (float32 central differences).
        assert scale > 0.5, f"gradient too small to check: {scale:.3e}"
        assert err < 1e-2 * scale, f"max |analytic - numeric| = {err:.3e}, max |grad| = {scale:.3f}"

    def test_gradients_finite_at_deeplab_settings(self):
        image, labels = make_scene(48, 64, 5, seed=8)
        logits = tf.Variable(coarse_logits(labels, 5)[None])
        with tf.GradientTape() as tape:
            q = dense_crf(image[None], logits, **V2)
            loss = -tf.reduce_mean(tf.math.log(tf.gather(q, labels[None], batch_dims=3) + 1e-6))
        grad = tape.gradient(loss, logits).numpy()
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


class TestKerasLayer:
    def test_layer_matches_function(self):
        image, labels = make_scene(20, 30, 3, seed=9)
        logits = coarse_logits(labels, 3)
        layer = DenseCRF(iterations=5, bilateral_color_sigma=5.0)
        np.testing.assert_allclose(
            layer(image[None], logits[None]).numpy(),
            dense_crf(image[None], logits[None], iterations=5, bilateral_color_sigma=5.0).numpy(),
            atol=rounding_bound(logits, 5))  # the same computation; rounding at most

    def test_get_config_round_trip(self):
        layer = DenseCRF(iterations=4, spatial_weight=2.0, spatial_sigma=2.0, bilateral_weight=5.0,
                         bilateral_spatial_sigma=40.0, bilateral_color_sigma=6.0, implementation="portable",
                         spatial_kernel="lattice", name="crf")
        clone = DenseCRF.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert isinstance(restored, DenseCRF) and restored.get_config() == layer.get_config()
        # A config saved before spatial_kernel existed loads with the exact kernel.
        old = {k: v for k, v in layer.get_config().items() if k != "spatial_kernel"}
        assert DenseCRF.from_config(old).spatial_kernel == "exact"

    def test_keras_file_round_trip(self, tmp_path):
        images = keras.Input((None, None, 3), dtype="uint8", name="image")
        logits = keras.Input((None, None, 3), name="logits")
        model = keras.Model([images, logits], DenseCRF(iterations=3, name="crf")(images, logits))
        path = tmp_path / "crf.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        image, labels = make_scene(20, 30, 3, seed=10)
        feed = [image[None], coarse_logits(labels, 3)[None]]
        # The same graph on the same inputs: rounding at most.
        np.testing.assert_allclose(loaded.predict(feed, verbose=0), model.predict(feed, verbose=0),
                                   atol=rounding_bound(feed[1], 3))
        assert loaded.get_layer("crf").get_config() == model.get_layer("crf").get_config()


class TestDownsampledMode:
    """downsample=f: mean field at 1/f resolution, pairwise term upsampled (never the default)."""

    def test_close_to_the_full_crf_and_still_better_than_the_unary(self, scene):
        image, labels, logits, num_classes = scene
        full = ours(image, logits, **V2)
        unary_miou = mean_iou(logits.argmax(-1), labels, num_classes)
        agreements = []
        for refine in (0, 1):
            half = ours(image, logits, **V2, downsample=2, refine_iterations=refine)
            assert half.shape == full.shape
            np.testing.assert_allclose(half.sum(-1), 1.0, atol=softmax_sum_tolerance(num_classes))
            agreements.append(np.mean(half.argmax(-1) == full.argmax(-1)))
            assert mean_iou(half.argmax(-1), labels, num_classes) > unary_miou + 0.01
        # An approximation, not the same computation; one full-resolution
        # iteration brings it closer to the exact CRF.
        assert 0.97 <= agreements[0] < agreements[1] < 1.0, agreements
        assert agreements[1] >= 0.99, agreements

    def test_odd_sizes_graph_mode_and_config(self):
        image, labels = make_scene(37, 51, 3, seed=12)
        logits = coarse_logits(labels, 3)
        layer = DenseCRF(iterations=3, downsample=3)
        eager = layer(image[None], logits[None]).numpy()
        spec = (tf.TensorSpec([1, None, None, 3], tf.uint8), tf.TensorSpec([1, None, None, 3], tf.float32))
        graph = tf.function(layer, input_signature=spec)(image[None], logits[None]).numpy()
        assert eager.shape == (1, 37, 51, 3)
        # 3 coarse iterations, a bilinear upsampling, 1 refine iteration.
        np.testing.assert_allclose(graph, eager, atol=rounding_bound(logits, 4))
        assert DenseCRF.from_config(layer.get_config()).downsample == 3
        assert DenseCRF().downsample == 1  # the exact CRF is the default

    def test_bad_refine_iterations_is_refused_by_name(self):
        with pytest.raises(ValueError, match="refine_iterations"):
            DenseCRF(downsample=2, refine_iterations=-1)

    @pytest.mark.parametrize("bad", [0, -2, 1.5, float("inf"), True, "2"])
    def test_bad_downsample_is_refused_by_name(self, bad):
        with pytest.raises(ValueError, match="downsample"):
            DenseCRF(downsample=bad)
        with pytest.raises(ValueError, match="downsample"):
            dense_crf(tf.zeros([1, 8, 8, 3]), tf.zeros([1, 8, 8, 2]), downsample=bad)
