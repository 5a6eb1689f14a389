"""The networks of a training run: built, compiled, initialised, or restored from a checkpoint.

  build_networks         the base model and the training model (MSC wrapper with 4 outputs).
  compile_for_training   DeepLabSGD on the schedule, the stride-8 loss, accumulation, SyncBN.
  lsuv_init              unit-variance rescaling of the conv kernels for from-scratch runs.
  load_checkpoint_model  the inference model of a config with a checkpoint's weights.
  inference_copy         a float32 single-scale copy outside any distribution scope.
"""

import keras

from deeplab_keras.training import callbacks as cb
from deeplab_keras.training.accumulation import install_accumulation
from deeplab_keras.training.losses import SegmentationCrossEntropy
from deeplab_keras.training.optimizer import make_optimizer
from deeplab_keras.training.precision import dtype_policy
from deeplab_keras.training.schedules import make_schedule
from deeplab_keras.training.strategy import synchronize_batchnorm


def build_networks(config, backbone_weights="config", mixed_precision="config"):
    """(base model, training model): the training model is the MSC wrapper with
    one output per scale plus the fused one when `config.msc_training`, else the
    base model itself. Weights are shared.

    Both are built under the dtype policy of `mixed_precision` ("config":
    `config.mixed_precision`; None: float32), see `training.precision`.
    """
    from deeplab_keras.models import build_model, wrap_msc

    weights = config.backbone_weights if backbone_weights == "config" else backbone_weights
    precision = config.mixed_precision if mixed_precision == "config" else mixed_precision
    with dtype_policy(precision):
        base = build_model(config.model, num_classes=config.num_classes, backbone_weights=weights,
                           width_multiplier=config.width_multiplier, freeze_bn=config.freeze_bn,
                           dropout=config.dropout)
        if not config.msc_training:
            return base, base
        return base, wrap_msc(base, config.msc_scales, training_outputs=True)


def compile_for_training(config, train_model, strategy=None, class_weights=None):
    """Optimizer, loss and `compile` of the training model, as `train` does it.

    DeepLabSGD (momentum, L2 on kernels, 10x on the classifier) on the
    config's schedule; one stride-8 loss per output; `jit_compile` from the
    config; a LossScaleOptimizer around the SGD under mixed float16 (Keras'
    `compile` adds it); `accumulate` micro-batches per step; SyncBatchNorm
    for trained BN under several replicas. Call inside `strategy.scope()`.
    `class_weights` (C floats, from `check_data`) weight each class's pixels
    in the loss; 255 stays ignored.

    Returns:
      (output keys or None, the loss passed to compile).
    """
    optimizer = make_optimizer(train_model, make_schedule(config), momentum=config.momentum,
                               weight_decay=config.weight_decay,
                               classifier_lr_mult=config.classifier_lr_mult)
    if isinstance(train_model.output, dict):
        output_keys = sorted(train_model.output)
        loss = {k: SegmentationCrossEntropy(class_weights=class_weights, name=f"{k}_loss")
                for k in output_keys}
    else:
        output_keys, loss = None, SegmentationCrossEntropy(class_weights=class_weights)
    if strategy is not None:
        synced = synchronize_batchnorm(train_model, strategy)
        if synced:
            print(f"[train] SyncBatchNorm over {strategy.num_replicas_in_sync} replicas: "
                  f"{len(synced)} BatchNorm layers", flush=True)
    train_model.compile(optimizer=optimizer, loss=loss, jit_compile=config.jit_compile)
    # The compiled optimizer: DeepLabSGD, or the LossScaleOptimizer wrapping it (float16).
    train_model.optimizer.build(train_model.trainable_variables)
    install_accumulation(train_model, loss, config.accumulate)
    return output_keys, loss


def lsuv_init(model, images, skip=()):
    """Layer-sequential unit-variance rescaling of the conv kernels (from-scratch runs).

    Mishkin & Matas, "All you need is a good init" (ICLR 2016): going from the
    input to the output, each conv kernel is divided by the standard deviation
    of the layer's output on `images`, so every layer starts with unit-variance
    activations. Without it, a plain 15-layer VGG with Keras' Glorot init and
    Caffe-scaled inputs spends its first few hundred SGD steps on a plateau
    predicting the class priors.

    Args:
      model: a functional DeepLab model (its conv layers on one graph).
      images: float32 [B, H, W, 3] preprocessed training images.
      skip: layers left as they are (the classifier, whose N(0, 0.01) init is DeepLab's).

    Returns:
      The list of (layer name, std before rescaling).
    """
    import tensorflow as tf

    skipped = {id(layer) for layer in skip}
    convs = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D) and id(layer) not in skipped]
    probe = keras.Model(model.inputs, [layer.output for layer in convs])
    stds = []
    for i, layer in enumerate(convs):
        # float32: under mixed float16 the sum of squares overflows.
        std = float(tf.math.reduce_std(tf.cast(probe(images, training=False)[i], tf.float32)))
        if not 0 < std < float("inf"):
            raise ValueError(f"LSUV init: layer {layer.name} has output std {std} on the "
                             "probe batch; cannot rescale it.")
        layer.kernel.assign(layer.kernel / std)
        stds.append((layer.name, std))
    return stds


def load_checkpoint_model(config, checkpoint):
    """The single-scale inference model of `config` with the weights of a training checkpoint.

    The training model (and its optimizer, whose state the checkpoint also holds)
    is rebuilt exactly as `train` builds it, so the checkpoint is checked in
    full: another architecture, num_classes or width gives a ValueError naming
    the file.
    """
    base, train_model = build_networks(config, backbone_weights=None)
    compile_for_training(config, train_model)
    cb.restore_checkpoint(train_model, checkpoint)
    return inference_copy(config, base)


def inference_copy(config, base):
    """A fresh float32 single-scale model outside any distribution scope, with `base`'s weights."""
    model, _ = build_networks(config, backbone_weights=None, mixed_precision=None)
    model.set_weights(base.get_weights())
    return model


