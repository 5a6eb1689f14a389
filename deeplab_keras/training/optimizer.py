"""SGD as Caffe runs it for DeepLab: momentum, L2 weight decay on kernels, LR multipliers.

DeepLab v1/v2 (ICLR 2015 Sec. 4.1, TPAMI 2017 Sec. 4) train with SGD, momentum
0.9, weight decay 5e-4 and a 10x learning rate on the classifier layers. Caffe's
weight decay is an L2 term added to the gradient before the momentum update:

    g = grad + weight_decay * w            (only for variables that decay)
    v = momentum * v - lr * lr_mult * g
    w = w + v

which is what `DeepLabSGD.update_step` does. (Keras' own `weight_decay` argument
is decoupled "AdamW-style" decay that bypasses the momentum buffer; it is not used.)
Variables are named by their Keras `variable.path`, so the optimizer config is
plain strings and the per-variable factors survive `tf.distribute`: under
MirroredStrategy `update_step` receives per-replica components and the index
lookup maps them back to their model variable.

Example:
    >>> from deeplab_keras.models import build_model
    >>> from deeplab_keras.training import PolyDecay, SegmentationCrossEntropy
    >>> model = build_model("vgg16_largefov", num_classes=21)
    >>> opt = make_optimizer(model, PolyDecay(1e-3, 20000))
    >>> model.compile(optimizer=opt, loss=SegmentationCrossEntropy())
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deeplab_keras")
class DeepLabSGD(keras.optimizers.SGD):
    """SGD with momentum, Caffe-style L2 decay and per-variable learning-rate factors.

    Args:
      learning_rate: float or `LearningRateSchedule` (the backbone's rate).
      momentum: momentum in [0, 1).
      weight_decay_rate: L2 coefficient added to the gradient of the variables in
        `decay_paths` (5e-4 in DeepLab).
      decay_paths: `variable.path` strings of the variables that decay (the conv /
        dense kernels; not biases, not BatchNorm).
      lr_multipliers: {variable.path: factor}; variables not listed get 1.0
        (DeepLab: 10.0 for the classifier's kernels and biases).
      name: optimizer name.
      **kwargs: passed to `keras.optimizers.SGD` (not `weight_decay`, see above).

    Raises:
      ValueError: bad factor / rate; at `build`, a listed path that matches no
        variable, or two variables sharing one path.
    """

    def __init__(self, learning_rate=0.001, momentum=0.9, weight_decay_rate=5e-4,
                 decay_paths=(), lr_multipliers=None, name="deeplab_sgd", **kwargs):
        if kwargs.get("weight_decay") is not None:
            raise ValueError("DeepLabSGD applies Caffe-style L2 decay through weight_decay_rate; "
                             f"Keras' decoupled weight_decay is not supported. Received: "
                             f"weight_decay={kwargs['weight_decay']!r}")
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), name=name, **kwargs)
        if isinstance(weight_decay_rate, bool) or not isinstance(weight_decay_rate, (int, float)) \
                or weight_decay_rate < 0:
            raise ValueError(f"weight_decay_rate must be a number >= 0. "
                             f"Received: weight_decay_rate={weight_decay_rate!r}")
        lr_multipliers = dict(lr_multipliers or {})
        for path, factor in lr_multipliers.items():
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
                raise ValueError(f"Learning-rate multipliers must be numbers >= 0. "
                                 f"Received: lr_multipliers[{path!r}]={factor!r}")
        self.weight_decay_rate = float(weight_decay_rate)
        self.decay_paths = tuple(decay_paths)
        self.lr_multipliers = {str(k): float(v) for k, v in lr_multipliers.items()}
        self._lr_mult_by_index = []
        self._decays_by_index = []

    def build(self, variables):
        if self.built:
            return
        paths = [v.path for v in variables]
        seen = set()
        for p in paths:
            if p in seen:
                raise ValueError(f"Two trainable variables share the path {p!r}; DeepLabSGD "
                                 "identifies variables by path. Give the layers unique names.")
            seen.add(p)
        for listed, what in ((self.lr_multipliers, "lr_multipliers"),
                             (self.decay_paths, "decay_paths")):
            missing = sorted(set(listed) - seen)
            if missing:
                raise ValueError(f"{what} names variables that are not being optimised: "
                                 f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        super().build(variables)
        decays = set(self.decay_paths)
        # Python floats per variable index: resolved at trace time, no tensors.
        self._lr_mult_by_index = [self.lr_multipliers.get(p, 1.0) for p in paths]
        self._decays_by_index = [p in decays for p in paths]

    def variable_lr_multiplier(self, variable):
        """The learning-rate factor of a model variable (after `build`)."""
        return self._lr_mult_by_index[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        gradient = ops.cast(gradient, variable.dtype)
        if self._decays_by_index[index] and self.weight_decay_rate > 0:
            gradient = gradient + ops.cast(self.weight_decay_rate, variable.dtype) * variable
        factor = self._lr_mult_by_index[index]
        if factor != 1.0:
            learning_rate = ops.cast(learning_rate, variable.dtype) * factor
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update({
            "weight_decay_rate": self.weight_decay_rate,
            "decay_paths": list(self.decay_paths),
            "lr_multipliers": dict(self.lr_multipliers),
        })
        config.pop("nesterov", None)
        return config


def _all_layers(model):
    """Every layer inside `model`, nested models included, each once."""
    seen, out, stack = set(), [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
        stack.extend(getattr(layer, "_layers", []) or [])
    return out


def kernel_paths(model):
    """Paths of the trainable conv/dense kernels of `model` (what weight decay applies to).

    A layer's kernel is its `kernel` / `depthwise_kernel` / `pointwise_kernel`
    variable; biases and BatchNorm gamma/beta are never included.
    """
    trainable = {id(v) for v in model.trainable_variables}
    paths = []
    for layer in _all_layers(model):
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            var = getattr(layer, attr, None)
            if isinstance(var, keras.Variable) and id(var) in trainable:
                paths.append(var.path)
    return sorted(set(paths))


def classifier_paths(model, layers=None):
    """Paths of the trainable variables of the classifier layers (10x learning rate).

    Args:
      model: the DeepLab model.
      layers: the classifier layers; default `deeplab_keras.models.classifier_layers(model)`.
    """
    if layers is None:
        from deeplab_keras.models import classifier_layers

        layers = classifier_layers(model)
    trainable = {id(v) for v in model.trainable_variables}
    paths = sorted({v.path for layer in layers for v in layer.trainable_variables
                    if id(v) in trainable})
    if not paths:
        raise ValueError("The classifier layers of the model have no trainable variables; "
                         f"received layers: {[layer.name for layer in layers]}")
    return paths


def make_optimizer(model, learning_rate, *, momentum=0.9, weight_decay=5e-4,
                   classifier_lr_mult=10.0, classifier=None):
    """The DeepLab optimizer for `model`: decay on kernels, `classifier_lr_mult` on the classifier.

    Args:
      model: a built Keras model (its variables must exist).
      learning_rate: float or schedule.
      momentum, weight_decay: SGD momentum and L2 coefficient.
      classifier_lr_mult: factor for the classifier's kernels and biases.
      classifier: classifier layers (default `deeplab_keras.models.classifier_layers`).

    Returns:
      A `DeepLabSGD` (call it inside the same distribution scope as the model).
    """
    multipliers = {p: float(classifier_lr_mult) for p in classifier_paths(model, classifier)}
    return DeepLabSGD(learning_rate=learning_rate, momentum=momentum,
                      weight_decay_rate=weight_decay, decay_paths=kernel_paths(model),
                      lr_multipliers=multipliers)
