"""The `.keras` runner of `deeplab-predict`: a checkpoint loaded with Keras."""

from pathlib import Path

import numpy as np

from deeplab_keras.predict.predictor import Predictor, _check_num_classes


def _load_keras(path, num_classes):
    import keras

    import deeplab_keras  # noqa: F401  (registers the custom layers)
    from deeplab_keras.preprocessing import preprocess_images

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # a zip that is not a Keras file, unknown layers, ...
        raise ValueError(f"Could not load Keras model {path}: {type(e).__name__}: {e}") from None
    output_shape = model.output_shape
    fused = isinstance(output_shape, dict)
    if fused:
        # MSC models built with training outputs: the fused map is the prediction.
        if "fused" not in output_shape:
            raise ValueError(f"Model {path} returns a dict without a 'fused' output: "
                             f"{sorted(output_shape)}")
        output_shape = output_shape["fused"]
    if isinstance(output_shape, list) or len(output_shape) != 4:
        raise ValueError(f"Model {path} must output one logits tensor [B, h, w, C]. "
                         f"Received: output_shape={model.output_shape}")
    input_shape = model.input_shape
    if isinstance(input_shape, list) or len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(f"Model {path} must take one image input [B, H, W, 3]. "
                         f"Received: input_shape={input_shape}")
    c = output_shape[-1]
    _check_num_classes(c, num_classes, path)
    fixed = tuple(input_shape[1:3]) if None not in input_shape[1:3] else None

    def logits_fn(image):
        y = model(preprocess_images(image[None]), training=False)
        return np.asarray(y["fused"] if fused else y)[0]

    return Predictor("keras", Path(path), int(c), fixed, logits_fn=logits_fn)
