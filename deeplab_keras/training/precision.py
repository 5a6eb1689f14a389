"""Mixed precision for training on GPUs (and bfloat16 on CPUs).

`--mixed-precision float16` / `bfloat16` builds the network under the Keras
`mixed_float16` / `mixed_bfloat16` dtype policy: variables stay float32 and the
convolutions compute in the low-precision type. These stay in float32:

- the logits (`build_model` ends in a float32 `logits` layer, the MSC max fusion
  is float32), hence the softmax, the loss (`losses` casts to float32) and the
  CRF that runs on the logits;
- the BatchNorm statistics (Keras' BatchNormalization computes its moments in
  float32 for float16 / bfloat16 inputs and keeps float32 moving averages);
- the optimizer state and the weight update (float32 variables).

With float16, `model.compile` wraps the optimizer in
`keras.optimizers.LossScaleOptimizer` (dynamic loss scaling; a step whose
scaled gradients overflow is skipped and the scale halved). bfloat16 has the
float32 exponent range and needs no loss scaling.

Only the training network uses the policy: the trainer's inference copy
(`model.keras`, the SavedModel export) is rebuilt in float32 with the trained
weights, so exports take float32 input on every device.

Example:
    >>> with dtype_policy("bfloat16"):
    ...     model = build_model("vgg16_largefov", width_multiplier=0.25)
    >>> model.dtype_policy.name, model.output.dtype
    ('mixed_bfloat16', 'float32')
"""

import contextlib

import keras

from deeplab_keras.training.config import MIXED_PRECISIONS


def policy_name(mixed_precision):
    """The Keras policy for a `TrainConfig.mixed_precision` value (None: "float32")."""
    if mixed_precision is None:
        return "float32"
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS} or None. "
                         f"Received: mixed_precision={mixed_precision!r}")
    return f"mixed_{mixed_precision}"


@contextlib.contextmanager
def dtype_policy(mixed_precision):
    """Build layers under the mixed policy of `mixed_precision`; restore the global one after.

    Args:
      mixed_precision: None, "float16" or "bfloat16".
    """
    name = policy_name(mixed_precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)
