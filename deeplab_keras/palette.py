"""The PASCAL VOC colour map and class names.

VOC label PNGs are palette ("P" mode) images: the palette index of a pixel is its
class id, 255 marks boundaries / ignore. The palette is the standard bit-interleaved
VOC colour map, so class 1 is (128, 0, 0), class 15 (person) is (192, 128, 128) and
255 is (224, 224, 192).
"""

import numpy as np

IGNORE_LABEL = 255

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_colormap(n=256):
    """The VOC colour map: uint8 [n, 3], entry i is the RGB colour of label i."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_PALETTE = voc_colormap()
