"""Synthetic scenes, the pydensecrf reference and a lattice renumbering, for the CRF's tests and benchmark.

VOC images cannot be downloaded here, so the CRF's tests and benchmark use
generated scenes with what the CRF reacts to: piecewise-smooth colour regions
(ellipses, rectangles and a background gradient) with sharp edges, several
regions per class in different colours, sensor noise; and "coarse" logits as a
stride-8 network gives them (class evidence at 1/8 resolution, noisy,
bilinearly upsampled), so that the CRF has blurred boundaries to repair.
"""

import numpy as np


def make_scene(height, width, num_classes=3, seed=0, num_shapes=8, noise=6.0):
    """Generates an RGB image and its label map.

    Args:
        height, width: image size in pixels.
        num_classes: labels are drawn from 0..num_classes-1 (0 = background).
        seed: random seed (the scene is a pure function of its arguments).
        num_shapes: number of foreground regions.
        noise: standard deviation of the additive Gaussian noise (0-255 scale).

    Returns:
        (image uint8 [H, W, 3], labels int32 [H, W]).

    Example:
        >>> image, labels = make_scene(200, 300, num_classes=5, seed=1)
    """
    if height < 1 or width < 1 or num_classes < 2:
        raise ValueError(
            f"Need height, width >= 1 and num_classes >= 2. "
            f"Received: height={height}, width={width}, num_classes={num_classes}")
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    scale = max(height, width)
    # Background: a smooth two-colour gradient.
    c0, c1 = rs.uniform(20, 235, 3), rs.uniform(20, 235, 3)
    t = (xx / max(width - 1, 1))[..., None]
    image = c0 * (1 - t) + c1 * t
    labels = np.zeros((height, width), np.int32)
    for k in range(num_shapes):
        cls = 1 + k % (num_classes - 1)
        cy, cx = rs.uniform(0, height), rs.uniform(0, width)
        ry, rx = rs.uniform(0.08, 0.3, 2) * scale
        if rs.rand() < 0.5:
            angle = rs.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = dx * np.cos(angle) + dy * np.sin(angle)
            v = -dx * np.sin(angle) + dy * np.cos(angle)
            mask = (u / rx) ** 2 + (v / ry) ** 2 < 1.0
        else:
            mask = (np.abs(yy - cy) < ry * 0.7) & (np.abs(xx - cx) < rx * 0.7)
        colour = rs.uniform(0, 255, 3)
        slope = rs.uniform(-0.4, 0.4, (2, 3))
        shade = colour + (yy[..., None] - cy) * slope[0] * 0.25 + (xx[..., None] - cx) * slope[1] * 0.25
        image[mask] = shade[mask]
        labels[mask] = cls
    image = image + rs.normal(0.0, noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def coarse_logits(labels, num_classes, seed=0, stride=8, noise=1.0, strength=4.0):
    """Logits as a stride-`stride` network would give them, at full resolution.

    The one-hot labels are averaged over stride x stride cells (so boundary
    cells are mixed), scaled by `strength`, perturbed with Gaussian noise of
    standard deviation `noise` and bilinearly upsampled back (half-pixel
    centres, like `tf.image.resize`).

    Args:
        labels: int [H, W] with values in 0..num_classes-1.
        num_classes: C.
        seed: random seed.
        stride: the downsampling factor.
        noise: noise standard deviation, in logit units.
        strength: logit of a pure cell.

    Returns:
        float32 [H, W, C].
    """
    labels = np.asarray(labels)
    height, width = labels.shape
    rs = np.random.RandomState(seed)
    gh, gw = -(-height // stride), -(-width // stride)
    onehot = np.zeros((gh * stride, gw * stride, num_classes), np.float64)
    onehot[:height, :width] = np.eye(num_classes)[labels]
    counts = np.zeros((gh * stride, gw * stride, 1))
    counts[:height, :width] = 1.0
    cells = onehot.reshape(gh, stride, gw, stride, num_classes).sum(axis=(1, 3))
    cells /= np.maximum(counts.reshape(gh, stride, gw, stride, 1).sum(axis=(1, 3)), 1.0)
    cells = strength * cells + rs.normal(0.0, noise, cells.shape)
    return _bilinear(cells, height, width, stride).astype(np.float32)


def _bilinear(grid, height, width, stride):
    """Bilinear upsampling with half-pixel centres and edge clamping."""
    gh, gw = grid.shape[:2]
    ys = np.clip((np.arange(height) + 0.5) / stride - 0.5, 0, gh - 1)
    xs = np.clip((np.arange(width) + 0.5) / stride - 0.5, 0, gw - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x1] * wx
    bottom = grid[y1][:, x0] * (1 - wx) + grid[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def mean_iou(pred, labels, num_classes):
    """Mean IoU over the classes present in `labels` or `pred` (NumPy)."""
    pred, labels = np.asarray(pred).ravel(), np.asarray(labels).ravel()
    conf = np.bincount(labels * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    valid = union > 0
    return float(np.mean(inter[valid] / union[valid]))


def pydensecrf_inference(image, logits, iterations=10, spatial_weight=3.0, spatial_sigma=1.0,
                         bilateral_weight=4.0, bilateral_spatial_sigma=67.0, bilateral_color_sigma=3.0):
    """Runs the reference, pydensecrf (PyPI `pydensecrf2`), on one image.

    The unary is -log softmax(logits), computed in float32 like `dense_crf`.

    Args:
        image: uint8 [H, W, 3] RGB.
        logits: float [H, W, C].
        (the CRF parameters as in `deeplab_keras.crf.dense_crf`.)

    Returns:
        float32 [H, W, C] marginals.
    """
    import pydensecrf.densecrf as dcrf  # dev dependency, imported on use

    logits = np.asarray(logits, np.float32)
    height, width, num_classes = logits.shape
    shifted = logits - logits.max(axis=-1, keepdims=True)
    unary = -(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(-1, num_classes).T, dtype=np.float32))
    if spatial_weight > 0:
        crf.addPairwiseGaussian(sxy=spatial_sigma, compat=spatial_weight)
    if bilateral_weight > 0:
        crf.addPairwiseBilateral(sxy=bilateral_spatial_sigma, srgb=bilateral_color_sigma,
                                 rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=bilateral_weight)
    q = np.asarray(crf.inference(iterations), np.float32)
    return q.T.reshape(height, width, num_classes)


def canonical_structure(offsets, neighbours):
    """A lattice's offsets [P, d+1] and neighbours [d+1, M+1, 2] (tensors or
    arrays) with the points renumbered in order of first occurrence in the
    offsets (tf.unique's numbering), so that lattices deduplicated in
    different orders compare equal."""
    offsets, neighbours = np.asarray(offsets), np.asarray(neighbours)
    num_points = neighbours.shape[1] - 1
    ids, first = np.unique(offsets.ravel(), return_index=True)
    if not np.array_equal(ids, np.arange(num_points)):
        raise ValueError(f"every lattice point must be a vertex of some input point; the offsets name "
                         f"{len(ids)} of the {num_points} points")
    new = np.empty(num_points + 1, np.int64)
    new[ids[np.argsort(first)]] = np.arange(num_points)
    new[num_points] = num_points  # the "no neighbour" row stays last
    renumbered = np.empty_like(neighbours)
    renumbered[:, new] = new[neighbours]
    return new[offsets], renumbered


FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7


def rounding_bound(logits, iterations, spatial_weight=3.0, bilateral_weight=4.0, roundings=4):
    """Bound on max |Q_a - Q_b| for two runs of the same float32 computation
    that differ only in the rounding of a few operations (a constant chain
    folded by Grappler, a sum in another order, another kernel's blocking).

    Each iteration's message m = logits + w1 Kn1 Q + w2 Kn2 Q has
    |m| <= max|logits| + w1 + w2 (Q is in [0, 1] and the normalised kernels'
    rows sum to about 1); `roundings` ops on its path rounded differently
    change it by at most roundings * eps * |m|; the softmax's Jacobian
    diag(q) - q q^T has infinity norm 2 q (1 - q) <= 1/2, so Q moves by half
    that. Added over the iterations (mean field near its fixed point damps
    an earlier error rather than amplifying it), plus `roundings` ulps of the
    final softmax for iterations=0.

    Example: max|logits| = 6, DeepLab v2 weights, 3 iterations:
    3 * 0.5 * 4 * 1.19e-7 * 13 + 4 * 1.19e-7 = 9.8e-6.
    """
    magnitude = float(np.abs(np.asarray(logits)).max()) + spatial_weight + bilateral_weight
    return (iterations * 0.5 * roundings * magnitude + roundings) * FLOAT32_EPS
