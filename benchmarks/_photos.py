"""Real photographs and deterministic coarse logits for the CRF benchmark.

The photographs are scikit-image's bundled ones (`skimage.data`, no
download). Each is centre-cropped to the target aspect ratio and resized
(anti-aliased) to the target size. The coarse logits come from a labelling
of the photograph itself, so that the CRF has real edges to follow:

1. k-means in (r, g, b, x/4, y/4) with k = the class count, on a fixed
   20,000-pixel subsample, 12 Lloyd iterations from a seeded initialisation
   (NumPy only, deterministic): colour clusters kept spatially coherent by
   the position terms; the labels of all pixels are their nearest centre;
2. `deeplab_keras.crf.testing.coarse_logits` on that label map: class
   evidence averaged over stride-8 cells, Gaussian noise (sigma 1 logit),
   bilinear upsampling, i.e. what a stride-8 network gives: blurred, noisy
   boundaries for the CRF to repair.

Label agreement with pydensecrf, not accuracy, is the measure on photographs
(their "ground truth" here is the clustering, which the CRF need not match).
"""

import numpy as np

from deeplab_keras.crf.testing import coarse_logits

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")


def load_photo(name, height, width):
    """uint8 [height, width, 3]: skimage.data.<name>(), centre-cropped and resized."""
    import skimage.data
    from skimage.transform import resize

    loader = getattr(skimage.data, name, None)
    if loader is None or name.startswith("_"):
        raise ValueError(f"No photograph named {name!r} in skimage.data; try one of {PHOTOS}")
    image = np.asarray(loader())
    if image.ndim != 3 or image.shape[-1] < 3:
        raise ValueError(f"skimage.data.{name}() is not an RGB photograph. Received: shape={image.shape}")
    image = image[..., :3]
    h, w = image.shape[:2]
    target = width / height
    if w / h > target:  # too wide: crop the width
        keep = int(round(h * target))
        image = image[:, (w - keep) // 2:(w - keep) // 2 + keep]
    else:
        keep = int(round(w / target))
        image = image[(h - keep) // 2:(h - keep) // 2 + keep]
    resized = resize(image, (height, width), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def kmeans_labels(image, num_classes, seed=0, iterations=12, sample=20000):
    """int32 [H, W] cluster ids of (r, g, b, x/4, y/4), deterministic."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    points = np.concatenate([image.reshape(-1, 3).astype(np.float64),
                             np.stack([xx.ravel(), yy.ravel()], 1) / 4.0], axis=1)
    rs = np.random.RandomState(seed)
    subset = points[rs.choice(len(points), min(sample, len(points)), replace=False)]
    centres = subset[rs.choice(len(subset), num_classes, replace=False)]

    def nearest(x):
        d = (x ** 2).sum(1)[:, None] - 2.0 * x @ centres.T + (centres ** 2).sum(1)[None]
        return d.argmin(1)

    for _ in range(iterations):
        assign = nearest(subset)
        for k in range(num_classes):
            members = subset[assign == k]
            if len(members):
                centres[k] = members.mean(0)
    return nearest(points).reshape(h, w).astype(np.int32)


def photo_case(name, height, width, num_classes, seed=0):
    """(image uint8 [H, W, 3], logits float32 [H, W, C]) for one photograph."""
    image = load_photo(name, height, width)
    labels = kmeans_labels(image, num_classes, seed=seed)
    return image, coarse_logits(labels, num_classes, seed=seed + 1)
