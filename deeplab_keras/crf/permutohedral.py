"""Permutohedral lattice from standard TensorFlow ops.

The bilateral kernel of the dense CRF, exp(-1/2 |f_i - f_j|^2) over 5-D
features (x, y, r, g, b scaled by their sigmas), is applied to every pixel's
class distribution in each mean-field iteration. Like pydensecrf (Krähenbühl &
Koltun 2011, https://arxiv.org/abs/1210.5644) this uses the permutohedral
lattice of Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice" (Eurographics 2010): splat each pixel onto the d + 1
vertices of its enclosing simplex, blur with [1 2 1] along each of the d + 1
lattice directions, slice back with the same barycentric weights.

The lattice *structure* (vertex indices, barycentric weights, blur neighbours)
is built once per image from the features by `build_lattice` (this module);
only `lattice_filter` (`deeplab_keras.crf.filtering`) runs in each iteration.
It has interchangeable forms (same numbers, tested):

* "sparse" (default in TensorFlow): splat, blur and slice are sparse-dense
  matmuls (SparseTensorDenseMatMul) with matrices built once; about 4x
  faster than gathers in TF on CPU, but SparseTensorDenseMatMul has no
  TFLite builtin and no tf2onnx conversion;
* "portable": gathers and scatters only (TFLite builtins, ONNX). The splat
  must sum repeated indices, and no single op does that fast everywhere:
  `tf.scatter_nd` is one SCATTER_ND in LiteRT, but tf2onnx emits ScatterND
  without reduction, which keeps only one of the repeated indices;
  `tf.tensor_scatter_nd_add` is ScatterND with reduction="add" in ONNX, but
  LiteRT expands it into GATHER_ND + ADD + two SCATTER_NDs + SUB + MUL + ADD
  (one [1.1 M, 21] splat: 246 ms against 27 ms). So the graph holds both in
  a `tf.cond` on a run-time probe, a two-element `tf.scatter_nd` onto one
  index: where it sums (TF, LiteRT) the splat is `tf.scatter_nd`, elsewhere
  (ONNX Runtime) `tf.tensor_scatter_nd_add`. The probe reads the input, so
  no converter can fold it; it runs once per lattice;
* "tflite": as "portable", but the splat is always `tf.scatter_nd` (no
  `tf.cond`; what `export_tflite` traces). Not for tf2onnx.

The structure itself uses only ops that convert to TFLite builtins and ONNX:

* lattice points are identified by an int64 mixed-radix hash of their integer
  coordinates and deduplicated by a hash table of first occurrences, built
  with `unsorted_segment_min` (TFLite UNSORTED_SEGMENT_MIN) in the sparse and
  "tflite" forms; this is faster than TF's Unique and LiteRT's UNIQUE (a
  `std::map`), but tf2onnx has no useful lowering of segment ops, so the
  portable form switches on the scatter probe: `tf.unique` where the
  scatter sums (TF, LiteRT), and where it keeps one value (ONNX Runtime) the
  table built with that scatter. The lattice points are numbered in another
  order by each, with the same numbers out of the filter;
* the simplex, its barycentric weights and the key hash are computed on
  d + 1 separate [P] columns (static shapes, no gathers along a second axis);
  what depends only on the ranks' permutation (the vertices' hash offsets,
  the barycentric slots) is gathered from small tables by its code (d <= 5;
  above, per-coordinate comparisons and one row sort);
* the blur neighbours are found (portable form) in a hash table of the
  lattice keys built with two plain scatters whose result does not depend on
  how a runtime treats repeated indices (bucket = key mod a prime; a bucket
  with one point names it), and only the queries that land in a shared bucket
  go to a small `tf.unique`: a `tf.unique` over all (d+1)M neighbour keys
  took 30 % of the CRF's time in ONNX Runtime; the sparse and "tflite" forms
  look the neighbours up in their dedupe's table of first occurrences
  (`_unique_by_hashing`);
* the portable splat is a scatter (`tf.scatter_nd` or
  `tf.tensor_scatter_nd_add`, above), not `unsorted_segment_sum`, which
  tf2onnx lowers to a sort plus a dense [points x max-count] grid.

As in pydensecrf, the lattice's [1 2 1] blurs reach about 2.5 sigma (with the
DeepLab v2 sigma_alpha = 67 px: about 170 px at equal colour); beyond that the
approximate kernel is exactly 0.

Several images share one lattice: the image index is part of the key, so the
images' lattice points never meet.
"""

import math
import sys
from typing import NamedTuple

import numpy as np
import tensorflow as tf


class SparseMatrix(NamedTuple):
    """A sparse matrix for SparseTensorDenseMatMul with int32 indices.

    `tf.SparseTensor` holds int64 indices; the kernel also takes int32, which
    halves the index bytes it streams per entry (the CRF's two filter chains
    at 375x500x21: 26.8 against 28.6 ms).

    Attributes:
        indices: int32 [nnz, 2], (row, column), row-major.
        values: float32 [nnz].
        dense_shape: int64 [2].
    """

    indices: tf.Tensor
    values: tf.Tensor
    dense_shape: tf.Tensor

    def with_values(self, values):
        return self._replace(values=values)

    def matmul(self, dense, adjoint=False):
        """self @ dense ([rows, C]), or self^T @ dense with adjoint."""
        return tf.raw_ops.SparseTensorDenseMatMul(a_indices=self.indices, a_values=self.values,
                                                  a_shape=self.dense_shape, b=dense, adjoint_a=adjoint)


class Lattice(NamedTuple):
    """The per-image structure of a permutohedral lattice.

    Attributes:
        offsets: int32 [P, d + 1], the lattice point of each simplex vertex of
            each of the P input points.
        weights: float32 [P, d + 1], the barycentric weights (sum to 1).
        neighbours: int32 [d + 1, M + 1, 2], for each blur direction the two
            neighbours of each lattice point; index M is an always-zero row
            that stands for "no neighbour".
        num_points: int32 scalar, M, the number of occupied lattice points.
        splat_matrix: `SparseMatrix` [P, M] holding `weights * pre_scale`
            at (point, offset), or None. Set for the "sparse" implementation,
            which applies splat, blur and slice as sparse-dense matmuls.
        slice_matrix: `SparseMatrix` [P, M] holding
            `weights * alpha * post_scale`, or None.
        blur_matrices: list of d + 1 `SparseMatrix` [M, M] (0.5 at each
            existing neighbour), or None.
        pre_scale: float32 [P, 1] or None: the filter is
            post_scale * K (pre_scale * values) (see `scale_lattice`).
        post_scale: float32 [P, 1] or None.
        splat_weights, slice_weights: float32 [P, d + 1] or None: the
            portable forms' `weights * pre_scale` and
            `weights * alpha * post_scale`, folded once by `scale_lattice`
            (the sparse form's matrices hold the same products), which saves
            two [P, C] products per filter.
        summing_scatter: how the portable splat sums repeated indices: True
            (the "tflite" implementation) with `tf.scatter_nd`, False with
            `tf.tensor_scatter_nd_add`, or a scalar bool tensor (the
            "portable" implementation) that picks `tf.scatter_nd` where the
            runtime's scatter sums repeated indices (`_scatter_sums`).
    """

    offsets: tf.Tensor
    weights: tf.Tensor
    neighbours: tf.Tensor
    num_points: tf.Tensor
    splat_matrix: object = None
    slice_matrix: object = None
    blur_matrices: object = None
    pre_scale: object = None
    post_scale: object = None
    splat_weights: object = None
    slice_weights: object = None
    summing_scatter: object = False


IMPLEMENTATIONS = ("sparse", "portable", "tflite")


def _scale_factors(d):
    # Elevation scaling from Adams et al. 2010 (p. 5-6): the lattice blur then
    # approximates a Gaussian of standard deviation 1 in feature units.
    inv_std_dev = math.sqrt(2.0 / 3.0) * (d + 1)
    return [inv_std_dev / math.sqrt((i + 1) * (i + 2)) for i in range(d)]


def _alpha(d):
    """The reference's correction of the blur's total mass, 1 / (1 + 2^-d)."""
    return np.float32(1.0 / (1.0 + 2.0 ** (-d)))


def _elevate(features, d):
    """Project [P, d] features onto the plane sum(x) = 0 in d + 1 dimensions.

    Follows the reference's summation order exactly (float32), so that the
    rounding below picks the same simplex as pydensecrf for all but
    boundary-tie points. Returns the d + 1 coordinates as a list of [P]
    columns: everything up to the key hash works column by column, which is
    2-5x faster than [P, d+1] tensors with gathers along their second axis
    (and has static shapes in a converted graph).
    """
    scale = _scale_factors(d)
    cf = [features[:, i] * np.float32(scale[i]) for i in range(d)]
    elevated = [None] * (d + 1)
    running = tf.zeros_like(cf[0])
    for j in range(d, 0, -1):
        elevated[j] = running - np.float32(j) * cf[j - 1]
        running = running + cf[j - 1]
    elevated[0] = running
    return elevated


def _enclosing_simplex(elevated, d):
    """Remainder-0 point, vertex ranks (lists of d + 1 [P] columns) and
    barycentric weights [P, d+1] per point."""
    dp1 = np.float32(d + 1)
    rounded = [tf.round(e * np.float32(1.0 / (d + 1))) for e in elevated]  # half to even
    rem0 = [r * dp1 for r in rounded]
    coord_sum = tf.add_n(rounded)  # small integers: exact in any order

    # rank[i]: position of residual i in descending order, ties broken by
    # index (the reference's pairwise loop: for each pair i < j, "r_i < r_j"
    # adds 1 to rank[i], otherwise 1 to rank[j]).
    resid = [e - r for e, r in zip(elevated, rem0)]
    rank = [tf.zeros_like(coord_sum) for _ in range(d + 1)]
    for i in range(d + 1):
        for j in range(i + 1, d + 1):
            less = tf.cast(resid[i] < resid[j], tf.float32)
            rank[i] = rank[i] + less
            rank[j] = rank[j] + (1.0 - less)

    # Bring the point back onto the plane when the rounded coordinates do not
    # sum to zero.
    for i in range(d + 1):
        r = rank[i] + coord_sum
        shift = tf.where(r < 0.0, dp1, 0.0) - tf.where(r >= dp1, dp1, 0.0)
        rank[i] = r + shift
        rem0[i] = rem0[i] + shift

    # Barycentric coordinates (Adams et al. 2010, p. 10): the reference adds
    # v_i at slot d - rank_i and subtracts it at the next slot. With by_slot[m]
    # the v of the coordinate in slot m, weight[m] = by_slot[m] - by_slot[m-1],
    # and the wrap-around gives weight[0] = 1 + by_slot[0] - by_slot[d].
    # by_slot is also v sorted ascending (the slots order the v: the weights
    # are non-negative), which is how it is found above _MAX_CODED_D (both
    # tested against the slot-by-slot definition).
    v = tf.stack([(e - r) * np.float32(1.0 / (d + 1)) for e, r in zip(elevated, rem0)], axis=1)
    if d <= _MAX_CODED_D:
        # The reference's own placement, v_i at slot d - rank_i, as one row
        # gather by the ranks' permutation code (no TopK: 11 ms at 375x500).
        by_slot = tf.gather(v, tf.gather(_coordinate_at_slot(d), _rank_code(rank, d)), axis=1, batch_dims=1)
    else:
        by_slot = tf.sort(v, axis=1)
    previous = tf.concat([by_slot[:, d:], by_slot[:, :d]], axis=1)
    first_slot = np.zeros((d + 1,), np.float32)
    first_slot[0] = 1.0
    weights = by_slot - previous + first_slot
    return rem0, rank, weights


# The hash must stay below 2^63; keep a bit of headroom.
_MAX_HASH_BITS = 62.0


def _check_hash_range(extent, image_ids, num_input):
    """Fails when the keys would not fit the int64 hash (sigmas far too small).

    With 0-255 colours and pixel positions this needs absurd settings (e.g.
    all sigmas below ~0.05 on a 500x500 image); pydensecrf stores keys as
    int16 and fails far earlier. Raises ValueError in eager mode; in graph
    mode a `tf.debugging` assertion (InvalidArgumentError when run by
    TensorFlow; converters drop it).
    """
    bits = tf.reduce_sum(tf.math.log(tf.maximum(extent, 1.0))) / np.float32(math.log(2.0))
    if image_ids is not None:
        num_images = tf.cast(tf.reduce_max(image_ids), tf.float32) + 1.0
        bits = bits + tf.math.log(tf.maximum(num_images, 1.0)) / np.float32(math.log(2.0))
    bits = tf.where(num_input > 0, bits, 0.0)  # empty input: nothing to hash
    if tf.executing_eagerly():
        if float(bits) >= _MAX_HASH_BITS:
            raise ValueError(
                f"The lattice features span about 2^{float(bits):.0f} integer keys, more than the "
                f"int64 hash holds (2^{_MAX_HASH_BITS:.0f}); the Gaussian sigmas are too small "
                f"for this input. Received: key extents={extent.numpy().tolist()}")
        return
    tf.debugging.assert_less(
        bits, np.float32(_MAX_HASH_BITS),
        message="permutohedral lattice: features span more integer keys than the int64 hash holds; "
                "the Gaussian sigmas are too small for this input")


def _key_hash(rem0, rank, image_ids, d):
    """Injective int64 hash of the d + 1 vertices' integer keys -> [P, d+1].

    Vertex r of the simplex is rem0 + canonical[r][rank], where the canonical
    simplex has canonical[r][k] = r for k <= d - r and r - (d + 1) otherwise;
    only the first d coordinates are hashed (the last follows from sum = 0).
    The hash is mixed radix over the box [min rem0 - 2(d+1), max rem0 + 2(d+1)]
    per coordinate, which holds every vertex (rem0 - (d+1) .. rem0 + d) and
    its blur neighbours (each coordinate moves by 1 or d), so neighbours are
    found by adding a per-direction constant to the hash.

    Being linear, the hash splits into a per-point base plus, per vertex,
    r * sum(strides) - (d+1) * sum_i stride_i [rank_i > d - r]: no
    [P, d+1, d] key tensor is formed, and the second part is a row of a
    table indexed by the ranks' permutation (`_rank_code`).

    Args:
        rem0, rank: lists of d + 1 float32 [P] columns (`_enclosing_simplex`).

    Returns:
        (hash int64 [P, d+1], list of d + 1 int64 neighbour offsets).
    """
    margin = np.float32(2 * (d + 1))
    lo = [tf.reduce_min(rem0[i]) - margin for i in range(d)]
    hi = [tf.reduce_max(rem0[i]) + margin for i in range(d)]
    extent_f = tf.stack([h - l + 1.0 for h, l in zip(hi, lo)])
    _check_hash_range(extent_f, image_ids, tf.shape(rem0[0])[0])
    extent = tf.cast(extent_f, tf.int64)
    strides = []
    stride = tf.constant(1, tf.int64)
    base = None
    for i in range(d):
        strides.append(stride)
        term = tf.cast(rem0[i] - lo[i], tf.int64) * stride  # >= 0
        base = term if base is None else base + term
        stride = stride * extent[i]
    if image_ids is not None:
        base = base + tf.cast(image_ids, tf.int64) * stride
    stride_sum = strides[0]
    for stride_i in strides[1:]:
        stride_sum = stride_sum + stride_i  # not add_n: ONNX Sum has no int64
    vertex = tf.range(d + 1, dtype=tf.int64) * stride_sum
    if d <= _MAX_CODED_D:
        # The wrapped part depends only on the ranks: one row of a table per
        # rank permutation, gathered by the permutation's code (3 ms against
        # 24 ms of [P, d+1] int64 compares, casts and products at 375x500).
        above = tf.where(_ranks_above(d), tf.stack(strides) * (d + 1), tf.constant(0, tf.int64))
        table = vertex - tf.reduce_sum(above, axis=2)  # [(d+1)^d, d+1]
        return base[:, None] + tf.gather(table, _rank_code(rank, d)), _neighbour_deltas(strides, d)
    remainders = np.arange(d + 1, dtype=np.float32)
    wrapped = None
    for i in range(d):
        step = tf.cast(rank[i][:, None] > np.float32(d) - remainders, tf.int64) * (strides[i] * (d + 1))
        wrapped = step if wrapped is None else wrapped + step
    return base[:, None] + vertex - wrapped, _neighbour_deltas(strides, d)


# Up to this d (the CRF's 5) the key hash gathers its per-vertex offsets from
# a table with a row per rank code, (d+1)^d rows (7776 at d = 5).
_MAX_CODED_D = 5


def _rank_code(rank, d):
    """int32 [P]: sum_{i<d} rank_i (d+1)^i, the ranks' permutation as a
    number (rank_d follows from the others); exact in float32."""
    code = rank[0]
    for i in range(1, d):
        code = code + rank[i] * np.float32((d + 1) ** i)
    return tf.cast(code, tf.int32)


def _code_ranks(d):
    """int [(d+1)^d, d+1]: the ranks each code of `_rank_code` stands for
    (rank_d is what the others leave of 0 + 1 + ... + d)."""
    codes = np.arange((d + 1) ** d)
    ranks = (codes[:, None] // (d + 1) ** np.arange(d)) % (d + 1)  # [K, d]
    return np.concatenate([ranks, d * (d + 1) // 2 - ranks.sum(axis=1, keepdims=True)], axis=1)


def _coordinate_at_slot(d):
    """int32 [(d+1)^d, d+1]: for each rank code, the coordinate i whose slot
    d - rank_i is m (any permutation for codes that are not one)."""
    return np.argsort(d - _code_ranks(d), axis=1, kind="stable").astype(np.int32)


def _ranks_above(d):
    """bool [(d+1)^d, d+1, d]: for each rank code, vertex r and coordinate
    i < d, whether rank_i > d - r (vertex r's coordinate i wraps by -(d+1))."""
    return _code_ranks(d)[:, None, :d] > (d - np.arange(d + 1))[None, :, None]


def _neighbour_deltas(strides, d):
    """The hash offset of each direction's blur neighbour: every coordinate
    -1, coordinate j + d (for j = d the implicit last coordinate moves)."""
    deltas = []
    for j in range(d + 1):
        delta = tf.constant(0, tf.int64)
        for i in range(d):
            delta = delta + (np.int64(d) if i == j else np.int64(-1)) * strides[i]
        deltas.append(delta)
    return deltas


# Plain Python control flow only (no tensor-dependent branches): skipping
# autograph's source conversion makes tracing ~4x faster.
@tf.autograph.experimental.do_not_convert
def build_lattice(features, image_ids=None, implementation="sparse"):
    """Builds the permutohedral lattice structure for a set of feature points.

    Args:
        features: float32 [P, d], each point's features already divided by
            their Gaussian sigmas (the kernel is exp(-1/2 |f_i - f_j|^2)).
            d must be static.
        image_ids: optional int [P], which image each point belongs to;
            points of different images never interact.
        implementation: "sparse" also builds the sparse splat/blur matrices
            (SparseTensorDenseMatMul, several times faster in
            TensorFlow); "portable" only uses ops that convert to TFLite
            builtins and ONNX (gather, scatter-add); "tflite" is "portable"
            with a splat that TFLite runs faster and tf2onnx gets wrong.

    Returns:
        A `Lattice`.

    Example:
        >>> from deeplab_keras.crf import lattice_filter
        >>> feats = tf.random.uniform([100, 5]) * 10.0
        >>> lattice = build_lattice(feats)
        >>> lattice_filter(lattice, tf.ones([100, 1])).shape
        TensorShape([100, 1])
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {IMPLEMENTATIONS}. Received: implementation={implementation!r}")
    features = tf.convert_to_tensor(features, tf.float32)
    d = features.shape[-1]
    if features.shape.rank != 2 or d is None:
        raise ValueError(f"`features` must be [P, d] with a static d. Received: features.shape={features.shape}")
    num_input = tf.shape(features)[0]

    elevated = _elevate(features, d)
    rem0, rank, weights = _enclosing_simplex(elevated, d)
    key_hash, deltas = _key_hash(rem0, rank, image_ids, d)  # [P, d+1]

    # The run-time probe only where its answer is used (the portable form).
    summing = _scatter_sums(features) if implementation == "portable" else implementation == "tflite"
    if implementation == "portable":
        # tf.unique where the scatter sums (TF, LiteRT); where it keeps one
        # of the values written to an index (ONNX Runtime), the hash table
        # of `_unique_by_hashing` built with that scatter (ONNX Runtime at
        # 375x500x21: 1.53 -> 1.31 s; its Unique is a hash map).
        flat = tf.reshape(key_hash, [-1])
        points, vertex_index = tf.cond(summing, lambda: tuple(tf.unique(flat)),
                                       lambda: _unique_by_hashing(flat, winning_scatter=True)[:2])
        num_points = tf.shape(points)[0]
        neighbours = _blur_neighbours_by_hashing(points, deltas, num_points, d)
    else:
        points, vertex_index, find = _unique_by_hashing(tf.reshape(key_hash, [-1]))
        num_points = tf.shape(points)[0]
        # Only the "+" neighbours are looked up (see _blur_neighbours_by_hashing).
        plus = find(tf.reshape(points[None] + tf.stack(deltas)[:, None], [-1]), num_points)
        neighbours = _with_minus_neighbours(tf.reshape(plus, tf.stack([d + 1, num_points])), num_points, d,
                                            by_segment_max=True)
    offsets = tf.reshape(vertex_index, tf.stack([num_input, d + 1]))
    lattice = Lattice(offsets=offsets, weights=weights, neighbours=neighbours, num_points=num_points,
                      summing_scatter=summing)
    if implementation == "sparse":
        splat = _splat_matrix(offsets, weights, num_points, d)
        lattice = lattice._replace(
            splat_matrix=splat,
            slice_matrix=splat.with_values(splat.values * _alpha(d)),
            blur_matrices=_blur_matrices(neighbours, num_points, d),
        )
    return lattice


# Size of the open-addressing-free hash tables (`_unique_by_hashing`,
# `_blur_neighbours_by_hashing`): a prime, so the mixed-radix keys spread over
# its buckets (at 375x500 about 3 % of the 121140 lattice points share a
# bucket).
_TABLE_SIZE = 4194301


def _table_size(count):
    """Buckets of the hash tables for `count` keys: a size known only at run
    time, so converters do not store an empty table as a 16 MiB constant (it
    is the prime `_TABLE_SIZE` below 268 M keys)."""
    return tf.maximum(count // 64, _TABLE_SIZE)


def _bucket(keys, size):
    """int32 bucket of each int64 key: key mod size."""
    return tf.cast(tf.math.floormod(keys, tf.cast(size, tf.int64)), tf.int32)


def _look_up_among(keys, ids, queries, asked, found, missing):
    """found [Q], except where asked (bool [Q]): the id (ids [S]) of the
    query among a few distinct keys [S], or missing where it is none.

    The hash tables' fallback for shared buckets: tf.unique over the keys
    followed by the asked queries keeps the order of first occurrence (so do
    TFLite UNIQUE and ONNX Unique with sorted=0), so a query gets an index
    below S exactly where it is one of the keys.
    """
    where_asked = tf.cast(tf.reshape(tf.where(asked), [-1]), tf.int32)
    num_keys = tf.shape(keys)[0]
    _, index = tf.unique(tf.concat([keys, tf.gather(queries, where_asked)], axis=0))
    # Index S (not one of the keys) picks `missing`; no gather from an empty ids.
    padded = tf.concat([ids, tf.reshape(missing, [1])], axis=0)
    resolved = tf.gather(padded, tf.minimum(index[num_keys:], num_keys))
    # Distinct indices: plain scatter (+1 so that 0 means "not asked").
    resolved = tf.scatter_nd(where_asked[:, None], resolved + 1, tf.shape(queries)) - 1
    return tf.where(asked, resolved, found)


def _unique_by_hashing(keys, winning_scatter=False):
    """`tf.unique` of int64 keys [N] by a hash table of first occurrences.

    Bucket b = key mod `_TABLE_SIZE` keeps the first position of its keys
    (`unsorted_segment_min`); an entry whose key equals its bucket's first
    key takes that key's index, and only the entries of the other keys of
    shared buckets (a few %) go to a small `tf.unique`.

    `unsorted_segment_min` is for TF and LiteRT (tf2onnx lowers it to a
    dense [entries x segments] grid): at 375x500 36 ms in TF against 55 ms
    for `tf.unique`, a single-threaded hash map; in LiteRT the CRF at
    513x513 goes from 2.07 to 1.93 s. With winning_scatter, each bucket
    keeps whichever of its positions a plain `tf.scatter_nd` leaves there,
    which is only right where the scatter keeps one of the values written
    to an index (ONNX Runtime's ScatterND without reduction; TF and LiteRT
    sum them): the bucket's "first" key is then that position's. The ONNX
    standard leaves repeated indices without reduction undefined; ONNX
    Runtime keeps one of the values (tested after conversion), which the
    portable blur-neighbour table assumes too.

    Returns:
        points: int64 [M], the first keys of their buckets (with
            winning_scatter: the keys the scatter kept) in order of first
            occurrence, then the other keys in order of first occurrence;
        index: int32 [N], each key's index in points;
        find: a function (int64 queries [Q], int32 missing) -> int32 [Q],
            each query's index in points, or `missing` where it is none, by
            the same table (the blur-neighbour search); None with
            winning_scatter.
    """
    count = tf.shape(keys)[0]
    size = _table_size(count)
    bucket = _bucket(keys, size)
    # 0, but read from the input: with static shapes a converter would store
    # tf.range(count) as a constant (6 MiB in the 513x513 TFLite model).
    zero = tf.minimum(tf.reduce_min(bucket[:1]), 0)
    position = tf.range(zero, zero + count)
    if winning_scatter:
        table = tf.scatter_nd(bucket[:, None], position, size[None])  # one of each bucket's positions
    else:
        table = tf.math.unsorted_segment_min(position, bucket, size)  # [T]; int32 max where empty
    first = tf.gather(table, bucket)  # [N]
    is_first = tf.equal(first, position)
    # Number the first entries in order: a scatter of M indices, not a
    # cumsum over all N (7.5 against 1.5 ms in TF).
    first_positions = tf.cast(tf.reshape(tf.where(is_first), [-1]), tf.int32)
    num_first = tf.shape(first_positions)[0]
    number = tf.scatter_nd(first_positions[:, None], tf.range(num_first), count[None])
    same = tf.equal(tf.gather(keys, first), keys)
    lost = tf.cast(tf.reshape(tf.where(tf.logical_not(same)), [-1]), tf.int32)
    lost_points, lost_index = tf.unique(tf.gather(keys, lost))
    # Distinct indices: plain scatter.
    index = tf.where(same, tf.gather(number, first),
                     num_first + tf.scatter_nd(lost[:, None], lost_index, count[None]))
    points = tf.concat([tf.gather(keys, first_positions), lost_points], axis=0)

    def find(queries, missing):
        entry = tf.gather(table, _bucket(queries, size))
        occupied = entry < count
        # The bucket's first key by its number: a gather from the M points,
        # not from the N keys (3.6 against 8.3 ms at 375x500).
        candidate = tf.gather(number, tf.minimum(entry, tf.maximum(count - 1, 0)))
        hit = occupied & tf.equal(tf.gather(points, candidate), queries)
        found = tf.where(hit, candidate, missing)
        # A query whose bucket holds another first key may be one of the
        # other keys of a shared bucket (few queries).
        lost_ids = num_first + tf.range(tf.shape(lost_points)[0])
        return _look_up_among(lost_points, lost_ids, queries, occupied & tf.logical_not(hit), found, missing)

    return points, index, None if winning_scatter else find


def _scatter_sums(features):
    """Scalar bool: does this runtime's `tf.scatter_nd` sum repeated indices?

    True in TensorFlow and LiteRT; False in ONNX Runtime, where tf2onnx's
    ScatterND has no reduction and keeps one of the values. The probe
    scatters two ones onto one index; the ones are computed from the input
    (min(min |f|, 0) + 1, which is 1 for any finite input and for none), so
    that no converter folds the probe into a constant.
    """
    one = tf.minimum(tf.reduce_min(tf.abs(features[:, :1])), 0.0) + 1.0
    probe = tf.scatter_nd(tf.zeros([2, 1], tf.int32), tf.stack([one, one]), [1])
    return probe[0] > 1.5


def _with_minus_neighbours(plus, num_points, d, by_segment_max=False):
    """The [d+1, M+1, 2] table from the "+" table [d+1, M] (M = none).

    minus[j, plus[j, i]] = i. by_segment_max inverts with one
    `unsorted_segment_max` (TF, LiteRT UNSORTED_SEGMENT_MAX: 9 ms against
    33 ms for the scatter in TF at 375x500, 23 against 38 ms in LiteRT at
    513x513); tf2onnx has no useful lowering of it, so the portable form
    scatters.
    """
    own = tf.broadcast_to(tf.range(num_points)[None, :], tf.stack([d + 1, num_points]))
    if by_segment_max:
        # Segment (j, plus[j, i]) receives i; each existing point is the "+"
        # neighbour of at most one point per direction, so the max is that
        # point, and segments nobody names stay at the dtype's lowest value.
        # Missing neighbours (plus = M) land in each direction's spare
        # segment M, which is dropped.
        segment = plus + tf.range(d + 1)[:, None] * (num_points + 1)
        minus = tf.math.unsorted_segment_max(tf.reshape(own, [-1]), tf.reshape(segment, [-1]),
                                             (d + 1) * (num_points + 1))
        minus = tf.reshape(minus, tf.stack([d + 1, num_points + 1]))[:, :num_points]
    else:
        # Missing neighbours write to distinct dummy slots past M, so no index
        # is written twice (ONNX ScatterND requires it).
        found = plus < num_points
        target = tf.where(found, plus, num_points + own)
        direction = tf.broadcast_to(tf.range(d + 1)[:, None], tf.stack([d + 1, num_points]))
        minus = tf.scatter_nd(tf.stack([direction, target], axis=-1), own + 1,
                              tf.stack([d + 1, 2 * num_points]))[:, :num_points] - 1
    minus = tf.where(minus < 0, num_points, minus)
    found = tf.stack([plus, minus], axis=-1)  # [d+1, M, 2]
    sentinel = tf.fill(tf.stack([d + 1, 1, 2]), num_points)
    return tf.concat([found, sentinel], axis=1)


def _blur_neighbours_by_hashing(points, deltas, num_points, d):
    """[d+1, M+1, 2] neighbour indices; M (the zero row) where none exists.

    The portable forms' search, by a hash table built with two plain
    scatters. Only the "+" neighbours are looked up: B is the "-" neighbour
    of A along direction j exactly when A is the "+" neighbour of B, so the
    "-" table is the inverse of the "+" table (`_with_minus_neighbours`).

    Bucket b = key mod `_TABLE_SIZE` holds the index + 1 of its point where
    exactly one lattice point falls in it, -1 where several do, 0 where none
    does: one gather and a key comparison decide each "+" query, and only
    the queries that land in a shared bucket go to a (small) `tf.unique`,
    together with the points of the shared buckets. No int64 sort (tf2onnx
    casts TopK's input to float32) and no UNIQUE over all the (d+1)M
    queries, which was the costliest op of the CRF in ONNX Runtime (0.68 s
    per run at 375x500x21: a third of the queries miss, and each miss is a
    hash-map insert).

    The table is built with `tf.scatter_nd`, and is the same whether a
    scatter sums repeated indices (TF, LiteRT) or keeps one of their values
    (ONNX ScatterND without reduction): every point writes its index + 1, and
    a point that reads back another value knows its bucket is shared (with
    summing, no point of a shared bucket reads its own value; with "one
    wins", all but the winner do); those points then mark their buckets
    with a second scatter, whose writers all write the same value. Scatter-add
    (`tensor_scatter_nd_add`) would do as well in TF and ONNX, but LiteRT
    expands it into seven ops over the 4 M-bucket table (0.2 s of the
    plain-traced CRF at 375x500x21).
    """
    size = _table_size(num_points)
    shape = size[None]
    own = tf.range(num_points)
    bucket = _bucket(points, size)[:, None]
    first = tf.scatter_nd(bucket, own + 1, shape)
    lost = tf.reshape(tf.where(tf.not_equal(tf.gather(first, bucket[:, 0]), own + 1)), [-1])
    lost_bucket = tf.gather(bucket, tf.cast(lost, tf.int32))
    marked = tf.scatter_nd(lost_bucket, tf.ones_like(lost_bucket[:, 0]), shape)
    table = tf.where(marked > 0, -1, first)
    step = tf.stack(deltas)[:, None]  # [d+1, 1]
    queries = tf.reshape(points[None] + step, [-1])  # [(d+1) M]
    entry = tf.gather(table, _bucket(queries, size))
    candidate = tf.clip_by_value(entry - 1, 0, tf.maximum(num_points - 1, 0))
    hit = (entry > 0) & tf.equal(tf.gather(points, candidate), queries)
    plus = tf.where(hit, candidate, num_points)

    # Queries in shared buckets: looked up among those buckets' points.
    shared = tf.cast(tf.reshape(tf.where(tf.gather(table, bucket[:, 0]) < 0), [-1]), tf.int32)
    plus = _look_up_among(tf.gather(points, shared), shared, queries, entry < 0, plus, num_points)
    return _with_minus_neighbours(tf.reshape(plus, tf.stack([d + 1, num_points])), num_points, d)


def _index_pairs(rows, cols, keep=None):
    """int32 [N, 2] (row, column) from two int32 [N] (>= 0), only where keep
    (bool [N]) if given: one int64 per pair, bitcast to two int32, instead of
    `tf.stack(..., axis=1)`, whose interleave of 1.1 M pairs took 7 ms at
    375x500."""
    low, high = (rows, cols) if sys.byteorder == "little" else (cols, rows)
    pairs = tf.bitwise.left_shift(tf.cast(high, tf.int64), 32) + tf.cast(low, tf.int64)
    if keep is not None:
        pairs = tf.boolean_mask(pairs, keep)
    return tf.bitcast(pairs, tf.int32)


def _splat_matrix(offsets, weights, num_points, d):
    num_input = tf.shape(offsets)[0]
    rows = tf.reshape(tf.broadcast_to(tf.range(num_input)[:, None], tf.shape(offsets)), [-1])
    indices = _index_pairs(rows, tf.reshape(offsets, [-1]))
    shape = tf.cast(tf.stack([num_input, num_points]), tf.int64)
    return SparseMatrix(indices, tf.reshape(weights, [-1]), shape)


def _blur_matrices(neighbours, num_points, d):
    """Sparse [M, M] matrices with 0.5 at each existing neighbour pair.

    Built row by row from the neighbour table, so the indices come out in
    row-major order (measurably faster in SparseTensorDenseMatMul).
    """
    shape = tf.cast(tf.stack([num_points, num_points]), tf.int64)
    rows = tf.reshape(tf.broadcast_to(tf.range(num_points)[:, None], tf.stack([num_points, 2])), [-1])
    matrices = []
    for j in range(d + 1):
        cols = tf.reshape(neighbours[j, :num_points], [-1])  # "+" and "-" neighbour of each point
        indices = _index_pairs(rows, cols, keep=cols < num_points)
        values = tf.fill(tf.shape(indices)[:1], np.float32(0.5))
        matrices.append(SparseMatrix(indices, values, shape))
    return matrices
