"""Exact spatial Gaussian kernel by separable 1-D convolutions.

The "smoothness" kernel of the dense CRF (Krähenbühl & Koltun 2011, eq. 3),
exp(-|p_i - p_j|^2 / 2 sigma^2), depends on pixel position only, so it factors
into a convolution along H followed by one along W. With sigma = 1 px (the
DeepLab v2 setting) the taps are truncated at `truncate` sigmas, where the
kernel is below exp(-8) = 3e-4 of its peak.
"""

import math

import numpy as np
import tensorflow as tf


def gaussian_taps(sigma, truncate=4.0):
    """1-D taps exp(-1/2 (k / sigma)^2) for k = -r..r, r = ceil(truncate * sigma).

    Not normalised: the CRF normalises the kernel itself (symmetrically).
    """
    radius = max(1, int(math.ceil(truncate * sigma)))
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    return np.exp(-0.5 * (k / sigma) ** 2).astype(np.float32)


# Plain Python control flow only (no tensor-dependent branches): skipping
# autograph's source conversion makes tracing ~4x faster.
@tf.autograph.experimental.do_not_convert
def spatial_filter(x, sigma, truncate=4.0):
    """Filters every channel of x with the 2-D Gaussian exp(-1/2 |dp / sigma|^2).

    The pixel itself is included (tap 1 at offset 0); outside the image counts
    as zero, so borders receive less mass, as in the reference.

    Args:
        x: float32 [B, H, W, C].
        sigma: positive float, in pixels.
        truncate: the taps stop at this many sigmas.

    Returns:
        float32 [B, H, W, C].
    """
    taps = gaussian_taps(sigma, truncate)
    channels = x.shape[-1]
    if channels is not None:
        # Depthwise: one [k, 1] and one [1, k] pass over all channels at once.
        kh = np.tile(taps.reshape(-1, 1, 1, 1), (1, 1, channels, 1))
        kw = np.tile(taps.reshape(1, -1, 1, 1), (1, 1, channels, 1))
        y = tf.nn.depthwise_conv2d(x, kh, strides=[1, 1, 1, 1], padding="SAME")
        return tf.nn.depthwise_conv2d(y, kw, strides=[1, 1, 1, 1], padding="SAME")
    # Unknown channel count (graph mode with unknown shapes): fold the
    # channels into the batch and filter a single channel.
    shape = tf.shape(x)
    y = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), tf.stack([-1, shape[1], shape[2], 1]))
    y = tf.nn.conv2d(y, taps.reshape(-1, 1, 1, 1), strides=1, padding="SAME")
    y = tf.nn.conv2d(y, taps.reshape(1, -1, 1, 1), strides=1, padding="SAME")
    y = tf.reshape(y, tf.stack([shape[0], shape[3], shape[1], shape[2]]))
    return tf.transpose(y, [0, 2, 3, 1])
