"""The SavedModel runner of `deeplab-predict`: `export_saved_model`'s signatures
(a TF Serving base folder picks its highest version)."""


import numpy as np

from deeplab_keras.predict.predictor import Predictor, _check_num_classes


def _resolve_saved_model_dir(path):
    """Accept a SavedModel dir or a TF Serving model dir holding numeric versions."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()
                and (p / "saved_model.pb").is_file()]
    if versions:
        return max(versions, key=lambda p: int(p.name))
    raise ValueError(f"{path} is a directory but not a SavedModel (no saved_model.pb, "
                     "and no numeric version folders containing one)")


def _signature_input(fn):
    _, kwargs = fn.structured_input_signature
    if len(kwargs) != 1:
        return None, None
    return next(iter(kwargs.items()))


def _is_image_batch(spec):
    return spec is not None and spec.dtype.is_floating and spec.shape.rank == 4 \
        and spec.shape[-1] == 3


def _load_saved_model(path, num_classes):
    import json

    import tensorflow as tf

    from deeplab_keras.preprocessing import preprocess_images

    path = _resolve_saved_model_dir(path)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ValueError(f"Could not load SavedModel {path}: {type(e).__name__}: {e}") from None
    sigs = dict(loaded.signatures)
    config_file = path / "deeplab_export.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}

    def call(name, key):
        fn = sigs[name]
        arg, _ = _signature_input(fn)
        return lambda image: np.asarray(
            fn(**{arg: tf.constant(image[None], tf.float32)})[key])[0]

    if "serving_logits" in sigs and "serving_images" in sigs:
        # Written by deeplab_keras.export: float signatures on RGB 0-255 images
        # (pre-processing in the graph), no re-encoding of the image needed.
        c = sigs["serving_logits"].structured_outputs["logits"].shape[-1]
        c = config.get("num_classes", c)
        _check_num_classes(c, num_classes, path)
        return Predictor("savedmodel", path, int(c), None,
                         logits_fn=call("serving_logits", "logits"),
                         labels_fn=call("serving_images", "labels"),
                         has_crf=bool(config.get("crf")))

    # Any other SavedModel: a float image signature (e.g. Keras `model.export()`,
    # which takes the model's pre-processed input) ...
    for name in sorted(sigs, key=lambda n: n != "serving_default"):
        arg, spec = _signature_input(sigs[name])
        outputs = sigs[name].structured_outputs
        four_d = [k for k, v in outputs.items() if v.shape.rank == 4]
        if _is_image_batch(spec) and len(four_d) == 1:
            fn, key = sigs[name], four_d[0]
            c = outputs[key].shape[-1]
            _check_num_classes(c, num_classes, path)

            def logits_fn(image, fn=fn, arg=arg, key=key):
                x = tf.constant(preprocess_images(image[None]), spec.dtype)
                return np.asarray(fn(**{arg: x})[key])[0]

            fixed = tuple(spec.shape[1:3]) if spec.shape[1:3].is_fully_defined() else None
            return Predictor("savedmodel", path, int(c), fixed, logits_fn=logits_fn)
    # ... or a signature on encoded image bytes returning labels.
    for name in sorted(sigs, key=lambda n: n != "serving_default"):
        arg, spec = _signature_input(sigs[name])
        outputs = sigs[name].structured_outputs
        if spec is not None and spec.dtype == tf.string and "labels" in outputs:
            if "num_classes" not in config:
                raise ValueError(f"SavedModel {path}: signature '{name}' returns labels "
                                 "but the number of classes is unknown "
                                 "(no deeplab_export.json).")
            _check_num_classes(config["num_classes"], num_classes, path)
            fn = sigs[name]

            def labels_fn(image, fn=fn, arg=arg):
                return np.asarray(fn(**{arg: tf.constant([_encode_png(image)])})["labels"])[0]

            return Predictor("savedmodel", path, int(config["num_classes"]), None,
                             labels_fn=labels_fn, has_crf=bool(config.get("crf")))
    raise ValueError(
        f"SavedModel {path} has no signature on an image batch [B, H, W, 3] returning "
        f"scores, nor one on encoded image bytes returning labels. "
        f"Signatures: {sorted(sigs)}")


def _encode_png(image):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
