"""Fully connected CRF (Krähenbühl & Koltun 2011) as TensorFlow ops.

DeepLab v1/v2 (Chen et al., https://arxiv.org/abs/1606.00915, sec. 3.3)
post-processes the upsampled logits with the fully connected CRF of
Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with
Gaussian Edge Potentials" (NIPS 2011, https://arxiv.org/abs/1210.5644):

    E(x) = sum_i theta_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j),
    theta_i = -log P(x_i),   mu = Potts,
    k = w1 exp(-|p_i-p_j|^2/2 sa^2 - |I_i-I_j|^2/2 sb^2) + w2 exp(-|p_i-p_j|^2/2 sg^2).

Mean-field inference, exactly as pydensecrf (PyPI `pydensecrf2`) runs it:
Q_0 = softmax(-U); Q_{t+1} = softmax(-U + sum_m w_m Kn_m Q_t), where
Kn = D^-1/2 K D^-1/2 (D = K 1) is the symmetrically normalised kernel with the
pixel itself included. The spatial kernel is exact (separable convolution) by
default, or pydensecrf's own 2-D permutohedral lattice with
spatial_kernel="lattice"; the bilateral kernel uses the permutohedral lattice
(`permutohedral.py`), the same approximation as the reference.

Everything is standard TF ops: it runs in eager and graph mode, on CPU and GPU,
differentiates with respect to the logits, and converts to TFLite builtins and
ONNX (at a fixed input size).
"""

import contextlib
import inspect
import math
import numbers
import threading
import uuid

import keras
import numpy as np
import tensorflow as tf

from deeplab_keras.crf.gaussian import spatial_filter
from deeplab_keras.crf.filtering import column_chunks, lattice_filter, scale_lattice
from deeplab_keras.crf.permutohedral import IMPLEMENTATIONS, build_lattice

# pydensecrf adds 1e-20 before the inverse square root of the kernel's row sums.
_NORM_EPS = 1e-20


# The mean-field parameters shared by `dense_crf`, `DenseCRF` and its config.
_PARAM_NAMES = ("iterations", "spatial_weight", "spatial_sigma", "bilateral_weight",
                "bilateral_spatial_sigma", "bilateral_color_sigma", "downsample",
                "refine_iterations", "spatial_kernel")

SPATIAL_KERNELS = ("exact", "lattice")


def _check_params(iterations, spatial_weight, spatial_sigma, bilateral_weight,
                  bilateral_spatial_sigma, bilateral_color_sigma, downsample=1, refine_iterations=1,
                  spatial_kernel="exact"):
    if spatial_kernel not in SPATIAL_KERNELS:
        raise ValueError(f"`spatial_kernel` must be one of {SPATIAL_KERNELS}. "
                         f"Received: spatial_kernel={spatial_kernel!r}")
    for name, value in (("iterations", iterations), ("refine_iterations", refine_iterations)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    if isinstance(downsample, bool) or not isinstance(downsample, numbers.Real) or not math.isfinite(downsample) \
            or downsample != int(downsample) or downsample < 1:
        raise ValueError(f"`downsample` must be an integer >= 1 (1 = full resolution). Received: downsample={downsample!r}")
    for name, value in (("spatial_weight", spatial_weight), ("bilateral_weight", bilateral_weight)):
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(value) or value < 0):
            raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    for name, value in (("spatial_sigma", spatial_sigma),
                        ("bilateral_spatial_sigma", bilateral_spatial_sigma),
                        ("bilateral_color_sigma", bilateral_color_sigma)):
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(value) or value <= 0):
            raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")


_PORTABLE = threading.local()  # .targets: the stack of open portable_ops() targets
PORTABLE_TARGETS = ("any", "tflite")


@contextlib.contextmanager
def portable_ops(target="any"):
    """Within this context, CRFs with implementation="auto" trace portable ops only.

    Not needed for conversion (the default graph converts as traced); it
    leaves out the sparse form that "auto" adds beside the portable one, so
    the graph is smaller, and with target="tflite" it traces the splat that
    LiteRT runs fastest (`tf.scatter_nd`) without the run-time switch the
    portable form uses to pick it (tf2onnx converts that op wrongly, so use
    it for TFLite only):

        with deeplab_keras.crf.portable_ops("tflite"):
            concrete = tf.function(model).get_concrete_function(spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)

    Args:
        target: "any" (TFLite and ONNX: the "portable" implementation) or
            "tflite" (the "tflite" implementation).
    """
    if target not in PORTABLE_TARGETS:
        raise ValueError(f"`target` must be one of {PORTABLE_TARGETS}. Received: target={target!r}")
    stack = _PORTABLE.__dict__.setdefault("targets", [])
    stack.append(target)
    try:
        yield
    finally:
        stack.pop()


def _resolve_implementation(implementation):
    """One of IMPLEMENTATIONS; "auto" is "sparse" unless in portable_ops()."""
    if implementation == "auto":
        stack = getattr(_PORTABLE, "targets", None)
        if not stack:
            return "sparse"
        return "tflite" if stack[-1] == "tflite" else "portable"
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be 'auto' or one of {IMPLEMENTATIONS}. "
            f"Received: implementation={implementation!r}")
    return implementation


def _check_shapes(images, logits):
    """Static checks; the dynamic ones are left to the returned assertions."""
    ishape, lshape = images.shape, logits.shape
    if ishape.rank is not None and ishape.rank != 4:
        raise ValueError(f"`images` must be [B, H, W, 3]. Received: images.shape={ishape}")
    if lshape.rank is not None and lshape.rank != 4:
        raise ValueError(f"`logits` must be [B, H, W, C]. Received: logits.shape={lshape}")
    if ishape.rank is None or lshape.rank is None:
        raise ValueError(
            f"`images` and `logits` need a known rank (4). "
            f"Received: images.shape={ishape}, logits.shape={lshape}")
    if ishape[-1] is not None and ishape[-1] != 3:
        raise ValueError(f"`images` must have 3 (RGB) channels. Received: images.shape={ishape}")
    if lshape[-1] is not None and lshape[-1] < 2:
        raise ValueError(f"`logits` must have at least 2 classes (C >= 2). Received: logits.shape={lshape}")
    for axis, name in ((0, "batch"), (1, "height"), (2, "width")):
        a, b = ishape[axis], lshape[axis]
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"`images` and `logits` must have the same {name} (logits at image resolution). "
                f"Received: images.shape={ishape}, logits.shape={lshape}")
    if not images.dtype.is_floating and images.dtype not in (tf.uint8, tf.int32, tf.int64):
        raise ValueError(f"`images` must be uint8 or float RGB in 0-255. Received: images.dtype={images.dtype.name}")
    if not logits.dtype.is_floating:
        raise ValueError(f"`logits` must be a float tensor. Received: logits.dtype={logits.dtype.name}")


def _runtime_checks(images, logits):
    """Assertions for shapes only known when the graph runs (graph mode)."""
    checks = []
    ishape, lshape = images.shape, logits.shape
    dims_unknown = any(ishape[a] is None or lshape[a] is None for a in range(3))
    if dims_unknown:
        checks.append(tf.debugging.assert_equal(
            tf.shape(images)[:3], tf.shape(logits)[:3],
            message="dense_crf: `images` and `logits` must have the same batch, height and width"))
    if ishape[-1] is None:
        checks.append(tf.debugging.assert_equal(
            tf.shape(images)[3], 3, message="dense_crf: `images` must have 3 (RGB) channels"))
    if lshape[-1] is None:
        checks.append(tf.debugging.assert_greater_equal(
            tf.shape(logits)[3], 2, message="dense_crf: `logits` must have at least 2 classes"))
    if not tf.executing_eagerly():
        # is_finite + reduce_all, not check_numerics: that is a single-threaded
        # scan (6.5 against 1.2 ms at 375x500x21). Converters drop the assertion.
        checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(logits)),
                                          ["dense_crf: `logits` contain NaN or Inf"]))
    return checks


def _position_features(shape, sigma):
    """[B*H*W, 2] features (x/s, y/s) of a [B, H, W, ...] shape, pydensecrf's order
    (by the float32 reciprocal: see `_bilateral_features`)."""
    ys = tf.cast(tf.range(shape[1]), tf.float32)
    xs = tf.cast(tf.range(shape[2]), tf.float32)
    grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")  # [H, W]
    pos = tf.stack([grid_x, grid_y], axis=-1) * np.float32(1.0 / sigma)  # [H, W, 2]
    return tf.reshape(tf.broadcast_to(pos[None], tf.stack([shape[0], shape[1], shape[2], 2])), [-1, 2])


def _normalised_lattice(features, image_ids, weight, implementation):
    """w D^-1/2 K D^-1/2, the lattice Gaussian over `features` [P, d] with the
    symmetric normalisation folded in, as one operator (`scale_lattice`)."""
    lattice = build_lattice(features, image_ids, implementation=implementation)
    ones = tf.ones(tf.stack([tf.shape(features)[0], 1]), tf.float32)
    norm = tf.math.rsqrt(lattice_filter(lattice, ones) + _NORM_EPS)  # [P, 1]
    return scale_lattice(lattice, pre_scale=norm, post_scale=np.float32(weight) * norm)


def _bilateral_features(images, bilateral_spatial_sigma, bilateral_color_sigma):
    """[B*H*W, 5] features (x/sa, y/sa, r/sb, g/sb, b/sb), pydensecrf's order.

    Multiplied by the float32 reciprocal, not divided: Grappler's constant
    folding turns a division by a constant into that multiplication in a
    graph, and a 1-ulp change of a colour feature (up to 255/3 = 85) moves
    the barycentric weights by ~eps * 85 = 1e-5, which the 10 iterations
    carry into Q. Multiplying in both modes gives eager and graph the same
    features bit for bit.
    """
    pos = _position_features(tf.shape(images), bilateral_spatial_sigma)
    color = tf.reshape(images * np.float32(1.0 / bilateral_color_sigma), [-1, 3])
    return tf.concat([pos, color], axis=-1)


# Plain Python control flow only (no tensor-dependent branches): skipping
# autograph's source conversion makes tracing ~4x faster.
@tf.autograph.experimental.do_not_convert
def dense_crf(images, logits, iterations=10, spatial_weight=3.0, spatial_sigma=1.0,
              bilateral_weight=4.0, bilateral_spatial_sigma=67.0, bilateral_color_sigma=3.0,
              implementation="auto", downsample=1, refine_iterations=1, spatial_kernel="exact"):
    """Mean-field inference in the fully connected CRF, matching pydensecrf.

    Equivalent pydensecrf calls, per image (the reference, up to float32
    rounding; by default the spatial kernel here is the exact Gaussian,
    pydensecrf's is its lattice approximation, which spatial_kernel="lattice"
    reproduces):

        d = dcrf.DenseCRF2D(W, H, C)
        d.setUnaryEnergy(-log_softmax(logits))
        d.addPairwiseGaussian(sxy=spatial_sigma, compat=spatial_weight)
        d.addPairwiseBilateral(sxy=bilateral_spatial_sigma,
                               srgb=bilateral_color_sigma, rgbim=image,
                               compat=bilateral_weight)
        Q = d.inference(iterations)

    Defaults are the DeepLab v2 VOC settings (deeplab-pytorch): w1=4, sa=67,
    sb=3, w2=3, sg=1, 10 iterations. DeepLab v1's VGG script used w1=4, sa=49,
    sb=5, w2=3, sg=3.

    Args:
        images: [B, H, W, 3] RGB in 0-255, uint8 or float (float values are
            clipped to [0, 255]; no gradient flows into the image).
        logits: float [B, H, W, C] at image resolution (C >= 2); the unary is
            -log softmax(logits).
        iterations: number of mean-field iterations (0 returns softmax(logits)).
        spatial_weight: w2, weight of the smoothness kernel (>= 0).
        spatial_sigma: sigma_gamma in pixels (> 0).
        bilateral_weight: w1, weight of the appearance kernel (>= 0).
        bilateral_spatial_sigma: sigma_alpha in pixels (> 0).
        bilateral_color_sigma: sigma_beta in RGB units (> 0).
        implementation: "auto" (default) runs the sparse form in eager
            mode; in a traced graph it puts the portable form in the graph
            and the sparse form beside it, and TensorFlow swaps in the sparse
            form when it runs the graph on a CPU, while TFLite and tf2onnx
            convert the portable form (see `_picked_by_device`); inside
            `portable_ops()` it is "portable". "sparse" applies the lattice
            with sparse-dense matmuls (SparseTensorDenseMatMul; about 2x
            faster than the portable form in TensorFlow on CPU), which has no
            TFLite builtin and no ONNX conversion; "portable" uses gathers
            and scatters only, and its splat switches at run time between
            `tf.scatter_nd` (where the runtime's scatter sums repeated
            indices: TF, LiteRT) and `tf.tensor_scatter_nd_add` (ONNX
            Runtime); "tflite" always uses `tf.scatter_nd`, which tf2onnx
            converts wrongly. All give the same numbers.
        downsample: 1 (default) is the CRF above. An integer f > 1 is an
            approximate, faster mode, never the default: images and logits
            are average-pooled by f (SAME padding), mean field runs at that
            resolution with both spatial sigmas divided by f, and the last
            iteration's pairwise term is upsampled bilinearly and added to
            the full-resolution unary; then `refine_iterations` iterations
            run at full resolution from that Q, which puts the edges back
            on the pixel grid. At 375x500x21 (DeepLab v2 settings) f=2 with
            1 refine iteration took 0.40x pydensecrf's time against 0.76x
            for the exact CRF, with 99.8 % of its labels (benchmarks/RESULTS.md).
        refine_iterations: full-resolution iterations after a downsampled
            run (>= 0; ignored when downsample is 1).
        spatial_kernel: "exact" (default), the smoothness kernel as a
            separable convolution (exp(-d^2 / 2 sg^2), truncated at 4 sg);
            or "lattice", pydensecrf's (and so DeepLab's released results')
            2-D permutohedral-lattice approximation of it, for parity with
            the reference: on real photographs the exact kernel changes
            about 0.1 % of pydensecrf's labels, the lattice one about
            0.001 %. The lattice is slower on CPU (docs/CRF.md).

    Eager calls run as a graph: from the second call with the same
    parameters, dtypes, batch size and class count, the call runs a
    `tf.function` compiled once with the height and width unknown (other
    image sizes do not retrace), as fast as the call inside your own
    `tf.function`; the first runs op by op (compiling costs about one
    call). Same numbers up to float32 rounding, gradients included.

    Returns:
        float32 [B, H, W, C] marginals Q (sum to 1 over C); argmax gives labels.

    Raises:
        ValueError: bad parameters, shapes that do not match, sigmas so
            small that the lattice keys overflow the int64 hash, or (in eager
            mode) non-finite logits. In graph mode with shapes unknown until
            run time, mismatches raise `tf.errors.InvalidArgumentError`;
            non-finite logits raise it through a `tf.debugging.Assert`
            in TensorFlow and give NaN probabilities in converted TFLite/ONNX
            models.

    Example:
        >>> images = tf.zeros([1, 48, 64, 3], tf.uint8)
        >>> logits = tf.random.normal([1, 48, 64, 3])
        >>> probs = dense_crf(images, logits, iterations=5)
        >>> labels = tf.argmax(probs, axis=-1)   # [1, 48, 64]
    """
    _check_params(iterations, spatial_weight, spatial_sigma, bilateral_weight,
                  bilateral_spatial_sigma, bilateral_color_sigma, downsample, refine_iterations,
                  spatial_kernel)
    resolved = _resolve_implementation(implementation)
    images = tf.convert_to_tensor(images)
    logits = tf.convert_to_tensor(logits)
    _check_shapes(images, logits)
    params = dict(iterations=iterations, spatial_weight=spatial_weight, spatial_sigma=spatial_sigma,
                  bilateral_weight=bilateral_weight, bilateral_spatial_sigma=bilateral_spatial_sigma,
                  bilateral_color_sigma=bilateral_color_sigma, downsample=int(downsample),
                  refine_iterations=int(refine_iterations), spatial_kernel=spatial_kernel)
    if not tf.executing_eagerly():
        return _traced_crf(images, logits, params, implementation, resolved)
    finite = tf.math.is_finite(logits)
    if not bool(tf.reduce_all(finite)):
        bad = int(tf.size(finite)) - int(tf.math.count_nonzero(finite))
        raise ValueError(
            f"`logits` contain {bad} NaN or Inf values; the CRF would spread them over the "
            f"whole image. Received: logits.shape={logits.shape}")
    compiled = _compiled(params, resolved, images, logits)
    if compiled is None:  # the first call of its kind: op by op
        return _traced_crf(images, logits, params, resolved, resolved, checked=True)
    try:
        return compiled(images, logits)
    except tf.errors.InvalidArgumentError as err:
        lines = [line for line in err.message.splitlines() if "permutohedral lattice" in line]
        if not lines:
            raise
        raise ValueError(
            f"{lines[0].strip()}; bilateral_spatial_sigma={bilateral_spatial_sigma}, "
            f"bilateral_color_sigma={bilateral_color_sigma}, images.shape={images.shape}") from None


def _traced_crf(images, logits, params, implementation, resolved, checked=False):
    """dense_crf's graph (or op by op, eagerly): checks (unless `checked`),
    casts and mean field."""
    if not checked:
        with tf.control_dependencies(_runtime_checks(images, logits)):
            logits = tf.identity(logits)
    logits = tf.cast(logits, tf.float32)
    images = tf.clip_by_value(tf.stop_gradient(tf.cast(images, tf.float32)), 0.0, 255.0)
    lattice_used = params["iterations"] > 0 and (
        params["bilateral_weight"] > 0 or (params["spatial_kernel"] == "lattice" and params["spatial_weight"] > 0))
    if implementation == "auto" and resolved == "sparse" and lattice_used:
        return _picked_by_device(images, logits, params)
    return _mean_field(images, logits, implementation=resolved, **params)


# Eager calls run dense_crf's graph, compiled once per parameters, form,
# dtypes, batch size and class count, with the height and width left unknown
# so that other image sizes run the same graph (no retracing): per-op
# dispatch of the lattice build and the iterations made eager calls ~2x
# slower than the same call in tf.function. The first _EAGER_CALLS calls of
# a kind run op by op, as tracing and optimising the graph cost about as
# much as one op-by-op call (a one-off call, or a test, gains nothing from
# it). Least recently used first out.
_COMPILED = {}
_COMPILED_LOCK = threading.Lock()
_MAX_COMPILED = 16
_EAGER_CALLS = 1
TRACE_COUNT = [0]  # graphs traced for eager calls (read by the tests)


def _compiled(params, resolved, images, logits):
    """The compiled CRF for this kind of call, or None to run it op by op."""
    key = (tuple(sorted(params.items())), resolved, images.dtype, logits.dtype,
           images.shape[0], logits.shape[-1])
    with _COMPILED_LOCK:
        fn = _COMPILED.pop(key, 0)
        if isinstance(fn, int) and fn < _EAGER_CALLS:
            _COMPILED[key] = fn + 1
            _evict()
            return None
        if isinstance(fn, int):
            specs = (tf.TensorSpec([images.shape[0], None, None, 3], images.dtype),
                     tf.TensorSpec([logits.shape[0], None, None, logits.shape[-1]], logits.dtype))

            # The eager call checked shapes and values; the resolved form is
            # traced directly (what eager mode ran op by op before).
            def crf(images, logits):
                TRACE_COUNT[0] += 1
                return _traced_crf(images, logits, params, resolved, resolved, checked=True)

            fn = tf.function(crf, input_signature=specs, autograph=False)
        _COMPILED[key] = fn
        _evict()
    return fn


def _evict():
    while len(_COMPILED) > _MAX_COMPILED:
        _COMPILED.pop(next(iter(_COMPILED)))


def _picked_by_device(images, logits, params):
    """Graph mode, implementation="auto": sparse on CPU, portable elsewhere.

    The graph calls the portable form (gather / scatter-add, which TFLite and
    tf2onnx convert); the sparse form is a second function in the graph's
    library with the same `api_implements` name and `api_preferred_device`
    "CPU". When TensorFlow runs the graph on a CPU, Grappler's implementation
    selector swaps the call to the sparse form (the mechanism Keras 2 used
    for its cuDNN LSTM); converters, which do not run it, see the portable
    form. The two forms give the same numbers (tested), so the swap is
    invisible except in speed. The name is unique per call, so two CRFs in
    one graph never swap into each other.
    """
    name = f"deeplab_keras_dense_crf_{uuid.uuid4().hex}"

    def variant(implementation, device):
        def mean_field(images, logits):
            return _mean_field(images, logits, implementation=implementation, **params)
        return tf.function(mean_field, autograph=False, experimental_attributes={
            "api_implements": name, "api_preferred_device": device})

    specs = (tf.TensorSpec(images.shape, tf.float32), tf.TensorSpec(logits.shape, tf.float32))
    variant("sparse", "CPU").get_concrete_function(*specs).add_to_graph()
    return variant("portable", "GPU")(images, logits)


# Plain Python control flow only (no tensor-dependent branches): skipping
# autograph's source conversion makes tracing ~4x faster.
@tf.autograph.experimental.do_not_convert
def _mean_field(images, logits, iterations, spatial_weight, spatial_sigma, bilateral_weight,
                bilateral_spatial_sigma, bilateral_color_sigma, implementation, downsample=1,
                refine_iterations=1, pairwise_only=False, initial_q=None, spatial_kernel="exact"):
    """The inference itself, on checked float32 images (0-255) and logits.

    With pairwise_only, returns the last iteration's pairwise term (what is
    added to the unary before the final softmax) instead of Q.
    """
    if downsample > 1 and iterations > 0 and (spatial_weight > 0 or bilateral_weight > 0):
        f = int(downsample)
        pooled = [tf.nn.avg_pool2d(x, f, f, "SAME") for x in (images, logits)]
        pairwise = _mean_field(*pooled, iterations, spatial_weight, spatial_sigma / f, bilateral_weight,
                               bilateral_spatial_sigma / f, bilateral_color_sigma, implementation,
                               pairwise_only=True, spatial_kernel=spatial_kernel)
        pairwise = tf.image.resize(pairwise, tf.shape(logits)[1:3], method="bilinear")
        q = tf.nn.softmax(logits + pairwise, axis=-1)
        if refine_iterations == 0:
            return q
        return _mean_field(images, logits, refine_iterations, spatial_weight, spatial_sigma, bilateral_weight,
                           bilateral_spatial_sigma, bilateral_color_sigma, implementation, initial_q=q,
                           spatial_kernel=spatial_kernel)
    shape = tf.shape(logits)
    # The unary -U is log_softmax(logits); softmax(-U + m) = softmax(logits + m)
    # for any message m (the per-pixel log-normaliser cancels), so the
    # logits stand in for it (13 ms less at 375x500x21).
    q = tf.nn.softmax(logits, axis=-1) if initial_q is None else initial_q
    if iterations == 0 or (spatial_weight == 0 and bilateral_weight == 0):
        return q

    sizes = [logits.shape[-1]]
    image_ids = None
    if images.shape[0] != 1:
        pixels = shape[1] * shape[2]
        image_ids = tf.reshape(tf.broadcast_to(tf.range(shape[0])[:, None], tf.stack([shape[0], pixels])), [-1])
    if bilateral_weight > 0:
        features = _bilateral_features(images, bilateral_spatial_sigma, bilateral_color_sigma)
        try:
            bilateral = _normalised_lattice(features, image_ids, bilateral_weight, implementation)
        except ValueError as err:
            raise ValueError(
                f"{err}; bilateral_spatial_sigma={bilateral_spatial_sigma}, "
                f"bilateral_color_sigma={bilateral_color_sigma}, images.shape={images.shape}") from None
        sizes = column_chunks(bilateral, logits.shape[-1])
    spatial_lattice = None
    if spatial_weight > 0 and spatial_kernel == "lattice":
        # pydensecrf's addPairwiseGaussian: a 2-D lattice over (x, y) / sg.
        spatial_lattice = _normalised_lattice(_position_features(shape, spatial_sigma), image_ids,
                                              spatial_weight, implementation)
        if bilateral_weight == 0:
            sizes = column_chunks(spatial_lattice, logits.shape[-1])
    elif spatial_weight > 0:
        ones = tf.ones(tf.stack([1, shape[1], shape[2], 1]), tf.float32)
        spatial_norm = tf.math.rsqrt(spatial_filter(ones, spatial_sigma) + _NORM_EPS)  # [1, H, W, 1]
        spatial_post = np.float32(spatial_weight) * spatial_norm

    def message(q_part, logits_part=None):
        """The pairwise term of some classes (plus their logits, if given).
        Where the sparse form filters several chunks of classes at once (one
        per core), each chunk's spatial filter waits for its bilateral
        filter, so that it does not hold up the other chunk's, and each
        chunk adds its logits: with the chunk widths of `column_chunks`, 43
        against 50 ms per iteration at 375x500x21 (no effect in eager mode).
        With one chunk the two filters run side by side.

        No sum of three [H, W, C] tensors: Grappler turns one (an AddN, or
        the Add chain its arithmetic optimizer makes an AddN) into
        TemporaryVariable + AssignAdd when the static shapes are known and
        its memory estimate is high (480x640x41: 0.16 s of AssignAdd, the
        graph 12 % slower than the same call with unknown sizes). The logits
        join the bilateral term in its [P, C] view, so each sum is one Add
        of two tensors that a reshape keeps apart."""
        terms = [] if logits_part is None else [logits_part]
        wait_for = []
        part_shape = tf.shape(q_part)
        per_point = tf.reshape(q_part, tf.stack([-1, part_shape[3]]))  # [P, C] for the lattices
        if bilateral_weight > 0:
            filtered = lattice_filter(bilateral, per_point, split_columns=False)
            if len(sizes) > 1:
                wait_for = [filtered]
            if terms:
                filtered = filtered + tf.reshape(terms.pop(), tf.shape(filtered))
            terms.append(tf.reshape(filtered, part_shape))
        if spatial_lattice is not None:
            with tf.control_dependencies(wait_for):
                filtered = lattice_filter(spatial_lattice, per_point, split_columns=False)
            terms.append(tf.reshape(filtered, part_shape))
        elif spatial_weight > 0:
            with tf.control_dependencies(wait_for):
                terms.append(spatial_post * spatial_filter(q_part * spatial_norm, spatial_sigma))
        return terms[0] if len(terms) == 1 else tf.add_n(terms)

    logits_parts = tf.split(logits, sizes, axis=-1) if len(sizes) > 1 else [logits]
    for step in range(iterations):
        last = pairwise_only and step == iterations - 1
        parts = tf.split(q, sizes, axis=-1) if len(sizes) > 1 else [q]
        x = [message(part, None if last else logit) for part, logit in zip(parts, logits_parts)]
        x = x[0] if len(x) == 1 else tf.concat(x, axis=-1)
        if last:
            return x
        q = tf.nn.softmax(x, axis=-1)
    return q


@keras.saving.register_keras_serializable(package="deeplab_keras")
class DenseCRF(keras.layers.Layer):
    """Keras layer: fully connected CRF mean-field inference after the logits.

    Called as `crf(images, logits)` with images RGB 0-255 [B, H, W, 3] (uint8
    or float) and float32 logits [B, H, W, C] at image resolution; returns
    float32 probabilities [B, H, W, C]. See `dense_crf` for the maths and the
    pydensecrf equivalence. The layer has no weights; gradients flow to the
    logits (CRF-as-RNN style end-to-end training is possible).

    With the default implementation="auto" a model holding the layer
    converts as traced (TFLite builtins, tf2onnx) and still runs the fast
    sparse form in TensorFlow on CPU; see `dense_crf`. implementation="sparse"
    does not convert (SparseTensorDenseMatMul has no TFLite builtin and no
    tf2onnx handler).

    Example:
        >>> from deeplab_keras.models import resize_logits
        >>> crf = DenseCRF(iterations=10)
        >>> probs = crf(images_uint8, resize_logits(logits, (h, w)))
        >>> labels = keras.ops.argmax(probs, axis=-1)
    """

    def __init__(self, iterations=10, spatial_weight=3.0, spatial_sigma=1.0, bilateral_weight=4.0,
                 bilateral_spatial_sigma=67.0, bilateral_color_sigma=3.0, implementation="auto",
                 downsample=1, refine_iterations=1, spatial_kernel="exact", **kwargs):
        _check_params(iterations, spatial_weight, spatial_sigma, bilateral_weight,
                      bilateral_spatial_sigma, bilateral_color_sigma, downsample, refine_iterations,
                      spatial_kernel)
        _resolve_implementation(implementation)
        super().__init__(**kwargs)
        self.implementation = implementation
        self.iterations = int(iterations)
        self.spatial_weight = float(spatial_weight)
        self.spatial_sigma = float(spatial_sigma)
        self.bilateral_weight = float(bilateral_weight)
        self.bilateral_spatial_sigma = float(bilateral_spatial_sigma)
        self.bilateral_color_sigma = float(bilateral_color_sigma)
        self.downsample = int(downsample)
        self.refine_iterations = int(refine_iterations)
        self.spatial_kernel = spatial_kernel

    def _params(self):
        """The mean-field parameters, as `dense_crf` takes them."""
        return {name: getattr(self, name) for name in _PARAM_NAMES}

    def call(self, images, logits):
        return dense_crf(images, logits, **self._params(), implementation=self.implementation)

    @classmethod
    def from_config(cls, config):
        # Validate first so that a bad stored value is a ValueError naming it,
        # not Keras's generic deserialization TypeError.
        defaults = inspect.signature(cls.__init__).parameters
        _check_params(**{k: config.get(k, defaults[k].default) for k in _PARAM_NAMES})
        _resolve_implementation(config.get("implementation", "auto"))
        return super().from_config(config)

    def compute_output_shape(self, images_shape, logits_shape):
        return tuple(logits_shape)

    def get_config(self):
        config = super().get_config()
        config.update(self._params(), implementation=self.implementation)
        return config
