"""Fully connected CRF (Krähenbühl & Koltun 2011) in the TensorFlow graph.

`DenseCRF` (Keras layer) and `dense_crf` (function) run mean-field inference
that matches pydensecrf, with standard TF ops only, so the CRF trains, serves
and exports (TFLite builtins, ONNX) together with the model.
"""

from deeplab_keras.crf.dense_crf import DenseCRF, dense_crf, portable_ops
from deeplab_keras.crf.gaussian import spatial_filter
from deeplab_keras.crf.filtering import lattice_filter, scale_lattice
from deeplab_keras.crf.permutohedral import Lattice, build_lattice

__all__ = ["DenseCRF", "dense_crf", "portable_ops", "spatial_filter", "Lattice", "build_lattice", "lattice_filter", "scale_lattice"]
