"""The `.tflite` runner of `deeplab-predict`: LiteRT at the file's fixed input size
(each image is resized to it and the scores resized back)."""

from pathlib import Path

import numpy as np

from deeplab_keras.predict.predictor import Predictor, _check_num_classes


def _load_tflite(path, num_classes):
    from deeplab_keras.preprocessing import preprocess_images

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError("Running .tflite models needs `ai-edge-litert` "
                          "(pip install ai-edge-litert).") from None
    try:
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
    except Exception as e:
        raise ValueError(f"Could not load TFLite model {path}: {type(e).__name__}: {e}") from None
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][-1] != 3:
        raise ValueError(f"TFLite model {path} must take one [1, H, W, 3] input. "
                         f"Received: {[tuple(d['shape']) for d in inputs]}")
    inp = inputs[0]
    h, w = int(inp["shape"][1]), int(inp["shape"][2])
    # Output names come from the signature; deeplab_keras.export writes
    # "logits" (stride 8) and "labels", and takes RGB 0-255 (pre-processing in
    # the graph). Anything else is taken to be a plain converted Keras model:
    # pre-processed input, one 4-D logits output.
    by_name = {}
    for runner_outputs in interp.get_signature_list().values():
        for name in runner_outputs.get("outputs", ()):
            by_name[name] = None
    sig = next(iter(interp.get_signature_list()), None)
    deeplab_export = sig is not None and {"logits", "labels"} <= set(by_name)
    if deeplab_export:
        runner = interp.get_signature_runner(sig)
        arg = interp.get_signature_list()[sig]["inputs"][0]
        logits_detail = runner.get_output_details()["logits"]
    else:
        four_d = [d for d in outputs if len(d["shape"]) == 4]
        if len(four_d) != 1:
            raise ValueError(f"TFLite model {path}: expected one [1, h, w, C] logits output. "
                             f"Received: {[tuple(d['shape']) for d in outputs]}")
        logits_detail = four_d[0]
    c = int(logits_detail["shape"][-1])
    _check_num_classes(c, num_classes, path)

    def quantize(x, detail):
        scale, zero = detail.get("quantization", (0.0, 0))
        if np.issubdtype(detail["dtype"], np.integer) and scale:
            x = np.rint(x / scale + zero)
        return x.astype(detail["dtype"])

    def dequantize(y, detail):
        scale, zero = detail.get("quantization", (0.0, 0))
        if np.issubdtype(y.dtype, np.integer) and scale:
            return (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def logits_fn(image):
        if deeplab_export:
            out = runner(**{arg: quantize(image[None].astype(np.float32), inp)})
            return dequantize(out["logits"], logits_detail)[0]
        interp.set_tensor(inp["index"], quantize(preprocess_images(image[None]), inp))
        interp.invoke()
        return dequantize(interp.get_tensor(logits_detail["index"]), logits_detail)[0]

    return Predictor("tflite", Path(path), c, (h, w), logits_fn=logits_fn)
