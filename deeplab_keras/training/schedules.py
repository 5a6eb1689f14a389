"""Learning-rate schedules of the DeepLab papers, as Keras schedules.

Both follow Caffe's definitions, evaluated at the iteration about to be run
(`optimizer.iterations`, 0 for the first update):

- "step" (DeepLab v1, ICLR 2015 Sec. 4.1): lr = base * gamma ** floor(it / step_size);
  v1 uses base 1e-3, gamma 0.1, step_size 2000 over 6000 iterations.
- "poly" (DeepLab v2, TPAMI 2017 Sec. 4.1): lr = base * (1 - it / max_it) ** power,
  power 0.9; it is clipped at max_it, where the rate reaches 0.

Example:
    >>> s = PolyDecay(2.5e-4, max_steps=20000, power=0.9)
    >>> float(s(10000))  # 2.5e-4 * 0.5 ** 0.9
    0.00013397...
"""

import keras
from keras import ops


def _check(name, value, *, positive=True, integer=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number. Received: {name}={value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{name} must be an integer. Received: {name}={value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be positive. Received: {name}={value!r}")


@keras.saving.register_keras_serializable(package="deeplab_keras")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Caffe "step": `base_lr * gamma ** floor(step / step_size)`.

    Args:
      base_lr: learning rate for steps [0, step_size).
      step_size: iterations between decays (2000 in DeepLab v1).
      gamma: decay factor (0.1).

    Example:
        >>> s = StepDecay(1e-3, step_size=2000, gamma=0.1)
        >>> [round(float(s(i)), 7) for i in (0, 1999, 2000, 4000)]
        [0.001, 0.001, 0.0001, 1e-05]
    """

    def __init__(self, base_lr, step_size, gamma=0.1):
        _check("base_lr", base_lr)
        _check("step_size", step_size, integer=True)
        _check("gamma", gamma)
        self.base_lr = float(base_lr)
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        exponent = ops.floor(step / float(self.step_size))
        return self.base_lr * ops.power(self.gamma, exponent)

    def get_config(self):
        return {"base_lr": self.base_lr, "step_size": self.step_size, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="deeplab_keras")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Caffe "poly": `base_lr * (1 - min(step, max_steps) / max_steps) ** power`.

    Args:
      base_lr: learning rate at step 0.
      max_steps: total iterations (the rate is 0 from there on).
      power: 0.9 in DeepLab v2.

    Example:
        >>> s = PolyDecay(1e-3, max_steps=100, power=0.9)
        >>> [round(float(s(i)), 8) for i in (0, 50, 100)]
        [0.001, 0.00053589, 0.0]
    """

    def __init__(self, base_lr, max_steps, power=0.9):
        _check("base_lr", base_lr)
        _check("max_steps", max_steps, integer=True)
        _check("power", power)
        self.base_lr = float(base_lr)
        self.max_steps = int(max_steps)
        self.power = float(power)

    def __call__(self, step):
        step = ops.minimum(ops.cast(step, "float32"), float(self.max_steps))
        return self.base_lr * ops.power(1.0 - step / float(self.max_steps), self.power)

    def get_config(self):
        return {"base_lr": self.base_lr, "max_steps": self.max_steps, "power": self.power}


def make_schedule(config):
    """The schedule a `TrainConfig` asks for (`lr_policy` "step" or "poly")."""
    if config.lr_policy == "step":
        return StepDecay(config.base_lr, config.lr_step_size, config.lr_gamma)
    if config.lr_policy == "poly":
        return PolyDecay(config.base_lr, config.steps, config.lr_power)
    raise ValueError(f"lr_policy must be 'step' or 'poly'. Received: lr_policy={config.lr_policy!r}")
