"""The lattice Gaussian applied to per-point values: splat, blur, slice.

`deeplab_keras.crf.permutohedral.build_lattice` builds a lattice's structure
once per image; `lattice_filter` here is what runs in every mean-field
iteration, in the lattice's form (see the permutohedral module for the
"sparse", "portable" and "tflite" forms and why each exists):

* sparse: three sparse-dense matmul stages (SparseTensorDenseMatMul), the
  values split into column chunks that suit the kernel's inner loop and run
  on several cores (`column_chunks`);
* portable and tflite: a scatter splat, d + 1 pairs of row gathers for the
  blur, d + 1 row gathers for the slice.

`scale_lattice` folds the CRF's normalisation (a diagonal scaling before and
after the filter) into the splat and slice weights once per lattice.
"""

import os

import tensorflow as tf

from deeplab_keras.crf.permutohedral import _alpha


def _splat(rows, contrib, grid_shape, summing):
    """Sums the [N, C] contributions into a [M+1, C] grid by row."""
    if summing is True:
        return tf.scatter_nd(rows, contrib, grid_shape)
    if summing is False:
        return tf.tensor_scatter_nd_add(tf.zeros(grid_shape, contrib.dtype), rows, contrib)
    return tf.cond(summing, lambda: tf.scatter_nd(rows, contrib, grid_shape),
                   lambda: tf.tensor_scatter_nd_add(tf.zeros(grid_shape, contrib.dtype), rows, contrib))


# Plain Python control flow only (no tensor-dependent branches): skipping
# autograph's source conversion makes tracing ~4x faster.
@tf.autograph.experimental.do_not_convert
def scale_lattice(lattice, pre_scale=None, post_scale=None):
    """Returns a lattice whose filter is post_scale * K (pre_scale * values).

    The CRF's normalised kernel D^-1/2 K D^-1/2 (times its weight) is applied
    ten times; the diagonal scalings are folded into the splat and slice
    weights (the sparse form's matrices) once, which saves two passes over
    [P, C] per application.

    Args:
        lattice: a `Lattice`.
        pre_scale, post_scale: float32 [P, 1] (or [P]), or None for 1.
    """
    def column(x):
        return None if x is None else tf.reshape(tf.cast(x, tf.float32), [-1, 1])

    pre, post = column(pre_scale), column(post_scale)
    d = lattice.offsets.shape[-1] - 1
    splat_weights = lattice.weights if pre is None else lattice.weights * pre
    slice_weights = lattice.weights * _alpha(d)
    if post is not None:
        slice_weights = slice_weights * post
    if lattice.splat_matrix is None:
        return lattice._replace(pre_scale=pre, post_scale=post, splat_weights=splat_weights,
                                slice_weights=slice_weights)
    # The matrices hold the [P, d+1] weights row by row (`_splat_matrix`), so
    # the scaled values are a reshape, not a gather.
    return lattice._replace(splat_matrix=lattice.splat_matrix.with_values(tf.reshape(splat_weights, [-1])),
                            slice_matrix=lattice.slice_matrix.with_values(tf.reshape(slice_weights, [-1])))


# SparseTensorDenseMatMul's CPU kernel switches to an Eigen-vectorised loop
# at 32 or more dense columns, which is 5-7x slower per column than its scalar
# loop (measured at 375x500 and 480x640: one 41-column filter 844 ms, two
# chunks of 21 and 20 columns 143 ms). Chunks of at most this many columns
# stay on the scalar loop; two chunks also run on two cores at once.
_MAX_CHUNK = 24
_MIN_SPLIT = 16


def _chunk_cost(columns):
    """Relative cost of one sparse filter over `columns` dense columns.

    The compiled inner loop of the kernel's scalar branch runs four columns
    per step and the rest one by one, each about 3x a column in a step
    (filter at 375x500, Intel Xeon: 8 columns 23.8 ms, 9: 25.5, 10: 28.0,
    11: 31.0, 12: 26.8; 20: 38.9, 21: 43.8, 24: 46.4).
    """
    return columns + 2 * (columns % 4)


def _column_chunks(channels):
    """Column counts for the sparse filter: one chunk, or the split into as
    few chunks as needed (two on several cores from _MIN_SPLIT columns) whose
    costliest chunk is cheapest, by `_chunk_cost` (21 -> 12 + 9, not 11 + 10:
    two filters side by side at 375x500 in 29.6 against 32.5 ms)."""
    if channels is None:
        return [None]
    count = -(-channels // _MAX_CHUNK)
    if count == 1 and channels >= _MIN_SPLIT and (os.cpu_count() or 1) > 1:
        count = 2
    if count == 1:
        return [channels]
    # best[n][k]: (costliest chunk, total cost, widths) for the first n
    # columns in k chunks; ties keep the earliest split found.
    best = [[None] * (count + 1) for _ in range(channels + 1)]
    best[0][0] = (0, 0, [])
    for k in range(1, count + 1):
        for n in range(k, channels + 1):
            for width in range(1, min(_MAX_CHUNK, n) + 1):
                prev = best[n - width][k - 1]
                if prev is None:
                    continue
                cost = _chunk_cost(width)
                cand = (max(prev[0], cost), prev[1] + cost, prev[2] + [width])
                if best[n][k] is None or cand[:2] < best[n][k][:2]:
                    best[n][k] = cand
    return best[channels][count][2]


def column_chunks(lattice, channels):
    """The column widths `lattice_filter` filters `channels` columns in: the
    sparse form's chunks (`_column_chunks`), else one. A caller with work of
    its own per column (the CRF's spatial term) splits the same way, runs
    the chunks with split_columns=False and schedules its work after each.
    """
    return _column_chunks(channels) if lattice.splat_matrix is not None else [channels]


def _sparse_filter(lattice, values):
    grid = lattice.splat_matrix.matmul(values, adjoint=True)  # [M, C]
    for blur in lattice.blur_matrices:
        grid = grid + blur.matmul(grid)
    return lattice.slice_matrix.matmul(grid)


# Plain Python control flow only (no tensor-dependent branches): skipping
# autograph's source conversion makes tracing ~4x faster.
@tf.autograph.experimental.do_not_convert
def lattice_filter(lattice, values, split_columns=True):
    """Applies the lattice Gaussian to per-point values (splat, blur, slice).

    Uses the sparse matrices when the lattice has them, otherwise gathers and
    scatter-adds (the portable form). Both give the same numbers.

    Args:
        lattice: a `Lattice` from `build_lattice`.
        values: float32 [P, C].
        split_columns: the sparse form filters wide values in column chunks
            (`column_chunks`); False filters them in one.

    Returns:
        float32 [P, C]: sum_j k(f_i, f_j) values_j, approximated on the lattice
        (the point itself included), with the reference's scaling.
    """
    d = lattice.offsets.shape[-1] - 1
    if lattice.splat_matrix is not None:
        sizes = _column_chunks(values.shape[-1]) if split_columns else [None]
        if len(sizes) == 1:
            return _sparse_filter(lattice, values)
        return tf.concat([_sparse_filter(lattice, part) for part in tf.split(values, sizes, axis=1)], axis=1)

    if lattice.splat_weights is None:  # an unscaled lattice: the same weights, folded here
        lattice = scale_lattice(lattice)
    channels = tf.shape(values)[1]
    contrib = values[:, None, :] * lattice.splat_weights[:, :, None]  # [P, d+1, C]
    rows, contrib = tf.reshape(lattice.offsets, [-1, 1]), tf.reshape(contrib, tf.stack([-1, channels]))
    grid_shape = tf.stack([lattice.num_points + 1, channels])
    grid = _splat(rows, contrib, grid_shape, lattice.summing_scatter)
    # Blur: [1 2 1] / 2 along each lattice direction; row M stays zero. Two
    # row gathers and an add, not one [M+1, 2, C] gather and a sum over its
    # middle axis: 6-18 % faster in LiteRT and ONNX Runtime at 375x500x21.
    for j in range(d + 1):
        plus, minus = lattice.neighbours[j, :, 0], lattice.neighbours[j, :, 1]
        grid = grid + 0.5 * (tf.gather(grid, plus) + tf.gather(grid, minus))
    # Slice vertex by vertex: d + 1 row gathers of [P, C], no [P, d+1, C]
    # tensor (94 MiB at 375x500x21) and no sum over its middle axis: 5-8 %
    # faster in LiteRT and ONNX Runtime.
    out = None
    for r in range(d + 1):
        term = tf.gather(grid, lattice.offsets[:, r]) * lattice.slice_weights[:, r : r + 1]
        out = term if out is None else out + term
    return out
