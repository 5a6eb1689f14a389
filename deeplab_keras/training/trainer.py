"""The DeepLab training recipe, top to bottom.

`train(config)` is the whole of it, in order:

  1. the run directory (must be writable) and the distribution strategy;
  2. the data: VOCdevkit (+SBD) files, the TFDS builder, the built-in set, or
     your own folder (`data.custom`: num_classes from its class table, the
     class-frequency table printed and written to the run directory, class
     weights for the loss; `check_data`);
  3. inside `strategy.scope()`: the model (+ the MSC wrapper with 4 outputs for
     v2; under the mixed-precision policy if asked), the schedule (v1 step / v2
     poly), SGD with momentum 0.9, L2 decay on kernels and 10x learning rate on
     the classifier, the stride-8 softmax loss with 255 ignored (optionally
     class-weighted), `model.compile`
     (XLA if asked), gradient accumulation and SyncBatchNorm if asked / needed
     (`compile_for_training`);
  4. resume from the newest checkpoint (model, momentum, step, hence schedule);
  5. `model.fit` with checkpoints, NaN stop, CSV / TensorBoard logs and the
     Keras progress bar;
  6. an inference copy of the single-scale network, saved as `model.keras`.

`run(config)` adds what `python train.py` does after training: evaluation on
the val split (mIoU and per-class table) and a SavedModel export.

References: DeepLab v1 (Chen et al., ICLR 2015, Sec. 4.1), DeepLab v2
(Chen et al., TPAMI 2017, Sec. 4); DESIGN.md Sec. 3.

Example:
    >>> from deeplab_keras.training import get_preset, apply_overrides, train
    >>> cfg = apply_overrides(get_preset("builtin"), ["steps=50", "output_dir=/tmp/run"])
    >>> result = train(cfg)
    >>> result.step
    50
"""

import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path

import keras

from deeplab_keras.training import callbacks as cb
from deeplab_keras.training.accumulation import install_accumulation
from deeplab_keras.utils.atomic import atomic_save, check_writable
from deeplab_keras.training.config import TrainConfig
from deeplab_keras.training.losses import SegmentationCrossEntropy
from deeplab_keras.training.optimizer import make_optimizer
from deeplab_keras.training.precision import dtype_policy
from deeplab_keras.training.schedules import make_schedule
from deeplab_keras.training.strategy import (distribute_options, is_chief, make_strategy,
                                             per_replica_batch, synchronize_batchnorm)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
# Keys that fix the variables of the network: a checkpoint only resumes under the same values.
ARCHITECTURE_KEYS = ("model", "num_classes", "width_multiplier", "freeze_bn", "msc_training")


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
      config: the resolved config (as written to config.json).
      model: the single-scale inference network (uncompiled, outside any
        distribution scope), logits float32 [B, ceil(H/8), ceil(W/8), C].
      step: optimizer steps taken in total (including before a resume).
      resumed_from: step the run resumed at (0 for a fresh run).
      checkpoint: path of the last checkpoint written or restored (None if none).
      history: the `keras.callbacks.History` dict of this process's `fit`.
      run_dir: the run directory.
    """

    config: TrainConfig
    model: keras.Model
    step: int
    resumed_from: int
    checkpoint: Path
    history: dict
    run_dir: Path


def resolve_data(config):
    """(config, data dir or None): the built-in dataset when no data source is given.

    With the built-in data, num_classes is set to the built-in class count. With
    your own data (`data_dir` in a layout of `deeplab_keras.data.custom`),
    num_classes comes from the dataset's class table: a value left at the
    preset's default is replaced (and the change printed), any other value that
    differs is an error naming both; the "train_aug" split (VOC + SBD) becomes
    "train". The resolved config is the one written to the run directory.

    Raises:
      ValueError: num_classes differs from your dataset's class count.
      decode.DataError: a bad dataset (names the file).
    """
    if config.tfds:
        return config, None
    if config.data_dir:
        dataset = open_custom(config)
        if dataset is not None:
            config = _custom_num_classes(config, dataset)
            if config.train_split == "train_aug":
                config = dataclasses.replace(config, train_split="train")
            dataset.examples(config.train_split)  # a missing split fails before training
            if config.evaluate or config.val_miou_images or config.image_summary_every:
                dataset.examples(config.val_split)
        return config, Path(config.data_dir)
    from deeplab_keras.data import builtin

    data_dir = builtin.ensure_builtin()
    if config.num_classes != builtin.NUM_CLASSES:
        print(f"[train] no --data-dir/--tfds: using the built-in dataset ({data_dir}), "
              f"num_classes {config.num_classes} -> {builtin.NUM_CLASSES}", flush=True)
        config = dataclasses.replace(config, num_classes=builtin.NUM_CLASSES)
    if config.train_split == "train_aug":
        config = dataclasses.replace(config, train_split="train")
    return config, data_dir


def open_custom(config):
    """The `custom.Dataset` of `config.data_dir`, or None for a VOCdevkit / TFDS / built-in."""
    if config.tfds or not config.data_dir:
        return None
    from deeplab_keras.data import custom

    if custom.source_kind(config.data_dir) == "voc":
        return None
    return custom.open_dataset(config.data_dir, ignore_value=config.ignore_value,
                               unknown_color=config.unknown_color,
                               ignore_classes=config.ignore_classes)


def _custom_num_classes(config, dataset):
    if config.num_classes == dataset.num_classes:
        return config
    from deeplab_keras.training.config import PRESETS

    default = PRESETS[config.name].num_classes if config.name in PRESETS \
        else TrainConfig().num_classes
    if config.num_classes != default:
        raise ValueError(
            f"num_classes={config.num_classes} does not match the dataset at {dataset.root}: "
            f"its class table ({dataset.table.source or 'the mask values'}) has "
            f"{dataset.num_classes} classes ({', '.join(dataset.class_names)}). Leave "
            f"--num-classes out to use the dataset's. Received: num_classes={config.num_classes}")
    print(f"[train] num_classes {config.num_classes} -> {dataset.num_classes} from the "
          f"dataset at {dataset.root}", flush=True)
    return dataclasses.replace(config, num_classes=dataset.num_classes)


DATA_REPORT_JSON = "data_report.json"
DATA_REPORT_TXT = "class_frequencies.txt"


def check_data(config, run_dir=None):
    """The checks before training; returns the loss's class weights (None: unweighted).

    For your own data: prints the layout, the class names, the ignore rules, the
    splits and the class-frequency table of the training split (decoding every
    training mask once, so unknown colours fail here with the file's name), warns
    when one class covers > 95 % of the labelled pixels, and writes the table to
    `run_dir/class_frequencies.txt` and `run_dir/data_report.json`; the class
    names and colours go to `run_dir/classes.json` (the sidecar that
    `deeplab-predict` colours its outputs with).

    Args:
      config: a resolved `TrainConfig` (`resolve_data`).
      run_dir: where to write the report (None: nowhere).

    Returns:
      None, or a tuple of num_classes floats.

    Raises:
      ValueError: class_weights is a method name but the data is not your own
        (VOC / TFDS / built-in have no frequency table here; give a list).
    """
    from deeplab_keras.data import custom
    from deeplab_keras.utils.atomic import atomic_write_text

    method = custom.parse_class_weights(config.class_weights)
    dataset = open_custom(config)
    if dataset is None:
        if isinstance(method, str) and method != "none":
            raise ValueError(
                f"class_weights={method!r} is computed from the class-frequency table of your "
                "own data (data_dir in an images/+masks/, VOC-like export or CamVid layout); "
                f"for this data source give {config.num_classes} numbers instead. Received: "
                f"class_weights={config.class_weights!r}")
        if isinstance(method, str):
            return None
        if len(method) != config.num_classes:
            raise ValueError(f"class_weights lists {len(method)} numbers but num_classes is "
                             f"{config.num_classes}. Received: "
                             f"class_weights={config.class_weights!r}")
        return tuple(method)
    print(dataset.describe(), flush=True)
    report = custom.frequency_report(dataset, config.train_split)
    weights = custom.class_weights(report, method)
    table = report.table(None if method == "none" else weights)
    print(f"[data] class frequencies of the {config.train_split} split "
          f"(labelled pixels at full resolution):\n{table}", flush=True)
    warning = custom.dominance_warning(report, config.train_split)
    if warning:
        print(f"[data] {warning}", flush=True)
    if run_dir is not None:
        atomic_write_text(Path(run_dir) / DATA_REPORT_TXT,
                          dataset.describe() + "\n" + table + "\n"
                          + (warning + "\n" if warning else ""))
        info = {"data_dir": str(dataset.root), "layout": dataset.layout,
                "num_classes": dataset.num_classes, "class_names": list(dataset.class_names),
                "class_colors": list(custom.hex_colors(dataset.class_colors)),
                "ignored_classes": list(dataset.table.ignored),
                "ignore_value": dataset.ignore_value, "unknown_color": dataset.unknown_color,
                "splits": {k: len(v) for k, v in dataset.splits.items()},
                "split_note": dataset.split_note, "class_weights": config.class_weights,
                "train_split": config.train_split, "warning": warning,
                "frequencies": report.to_dict(None if method == "none" else weights)}
        atomic_write_text(Path(run_dir) / DATA_REPORT_JSON, json.dumps(info, indent=2) + "\n")
        # Beside model.keras (and copied into exports): deeplab-predict colours with it.
        custom.write_classes_json(Path(run_dir) / custom.CLASSES_FILE, dataset.class_names,
                                  dataset.class_colors)
    return None if method == "none" else tuple(float(w) for w in weights)


def make_train_dataset(config, data_dir, seed, output_keys=None):
    """The augmented, repeated training stream, batched with the global batch.

    Args:
      config: the `TrainConfig`.
      data_dir: VOCdevkit dir, or None with `config.tfds`.
      seed: augmentation / order seed (the trainer offsets it by the resume step
        so a resumed run does not replay the first batches).
      output_keys: for MSC models, the output names: labels are repeated into a
        dict with one entry per output (each loss reduces them to its own size).

    Returns:
      tf.data.Dataset of (images float32 [B, c, c, 3] preprocessed, labels int32
      [B, c, c] or a dict of them), c = crop_size, B = batch_size.
    """
    common = dict(training=True, batch_size=config.batch_size, crop_size=config.crop_size,
                  num_classes=config.num_classes, seed=seed, repeat=True, drop_remainder=True,
                  scale_range=(config.min_scale, config.max_scale), cache=config.cache_data)
    if config.tfds:
        from deeplab_keras.data import make_tfds_dataset

        tfds_config = "train_aug" if config.train_split == "train_aug" else "segmentation"
        ds = make_tfds_dataset(config.train_split, config=tfds_config,
                               data_dir=config.tfds_data_dir, manual_dir=config.tfds_manual_dir,
                               **common)
    else:
        from deeplab_keras.data import make_dataset

        ds = make_dataset(str(data_dir), config.train_split, sbd_dir=config.sbd_dir,
                          ignore_value=config.ignore_value, unknown_color=config.unknown_color,
                          ignore_classes=config.ignore_classes, **common)
    if output_keys:
        keys = tuple(output_keys)
        ds = ds.map(lambda images, labels: (images, {k: labels for k in keys}))
    return distribute_options(ds)


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


def check_resumable(config, run_dir):
    """Refuse to resume a run whose architecture differs (names the keys and values)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); cannot check the checkpoints "
                         "against this config.") from None
    current = config.to_dict()
    diff = [f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}"
            for k in ARCHITECTURE_KEYS if k in saved and saved[k] != current[k]]
    if diff:
        raise ValueError(f"The checkpoints in {run_dir} were trained with another network ("
                         + "; ".join(diff) + "). Use another --output-dir, or the same settings.")


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
    return _inference_copy(config, base)


def _inference_copy(config, base):
    """A fresh float32 single-scale model outside any distribution scope, with `base`'s weights."""
    model, _ = build_networks(config, backbone_weights=None, mixed_precision=None)
    model.set_weights(base.get_weights())
    return model


def train(config, *, devices=None, extra_callbacks=(), verbose="auto"):
    """Train a DeepLab model as `config` says; resumable, atomic checkpoints.

    Args:
      config: a `TrainConfig` (a preset with overrides).
      devices: MirroredStrategy devices (None: all GPUs, else the CPU).
      extra_callbacks: more Keras callbacks for `fit`.
      verbose: Keras `fit` verbosity ("auto" / 1: progress bar).

    Returns:
      `TrainResult`.

    Raises:
      PermissionError: the output directory is not writable.
      FileExistsError / FileNotFoundError: `resume` "never" with checkpoints
        present / "require" without one.
      ValueError: bad config, or checkpoints of another architecture.
      TrainingDivergedError: the loss became NaN/Inf (message names the step and
        the last good checkpoint, which is kept).
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig. Received: {type(config).__name__}")

    # 1. Where it runs.
    run_dir = config.run_dir
    strategy = make_strategy(config.multi_worker, devices)
    chief = is_chief(strategy)
    if chief:
        check_writable(run_dir)
        cb.remove_stale_temporaries(run_dir)
    per_replica_batch(config.batch_size, strategy, config.accumulate)
    latest = cb.latest_checkpoint(run_dir)
    if latest and config.resume == "never":
        raise FileExistsError(f"{run_dir} already holds checkpoints (newest: {latest[1]}) and "
                              "resume='never'. Use another --output-dir or --resume auto.")
    if not latest and config.resume == "require":
        raise FileNotFoundError(f"resume='require' but {run_dir / cb.CHECKPOINT_DIR} has no checkpoint.")

    # 2. Data (the built-in set when no source is given).
    config, data_dir = resolve_data(config)
    if latest:
        check_resumable(config, run_dir)
    # The checks before training (your own data: classes, frequencies, warning).
    class_weights = check_data(config, run_dir if chief else None)
    if chief:
        config.to_json(run_dir / CONFIG_FILE)
    keras.utils.set_random_seed(config.seed)

    # 3. Model, schedule, optimizer, loss.
    with strategy.scope():
        base, train_model = build_networks(config)
        output_keys, _ = compile_for_training(config, train_model, strategy, class_weights)

        # 4. Resume: weights, momentum and the step counter the schedule reads.
        start_step = 0
        if latest:
            start_step = cb.restore_checkpoint(train_model, latest[1])
            print(f"[train] resumed from {latest[1]} at step {start_step}", flush=True)

        # From scratch: optionally rescale the initial kernels (LSUV) on a training batch.
        if not latest and config.backbone_weights is None and config.init == "lsuv":
            from deeplab_keras.models import classifier_layers

            probe_ds = make_train_dataset(config, data_dir, seed=config.seed)
            images = next(iter(probe_ds))[0]
            lsuv_init(base, images, skip=classifier_layers(base))

    # 5. fit, in "epochs" of steps_per_epoch steps up to config.steps.
    history = {}
    stop_nan = cb.StopOnNonFinite()
    checkpoints = cb.PeriodicCheckpoint(run_dir, config.checkpoint_every, config.keep_checkpoints,
                                        is_chief=chief)
    if start_step < config.steps:
        dataset = make_train_dataset(config, data_dir, seed=config.seed + start_step,
                                     output_keys=output_keys)
        # Only the chief logs into the run directory; other workers log to a scratch dir.
        log_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="deeplab-worker-"))
        callbacks = [
            stop_nan,
            cb.StopAtStep(config.steps),
            checkpoints,
            cb.LearningRateLogger(),
            *_epoch_miou(config, base, data_dir, chief),
            *_image_summaries(config, base, data_dir, log_dir, chief),
            keras.callbacks.CSVLogger(str(log_dir / "training_log.csv"), append=start_step > 0),
            *_tensorboard(log_dir / "logs"),
            *extra_callbacks,
        ]
        if config.multi_worker:
            with strategy.scope():
                _prebuild_for_multi_worker(train_model, dataset)
        spe = config.steps_per_epoch
        epochs = math.ceil(config.steps / spe)
        if config.mixed_precision == "float16":
            # A step whose scaled gradients overflow is skipped (the loss scale halves; ~15
            # at the start, then rarely): room for those batches; StopAtStep ends the run
            # after `steps` optimizer steps.
            epochs += math.ceil((32 + config.steps // 1000) / spe)
        fit = train_model.fit(dataset, epochs=epochs, steps_per_epoch=spe,
                              initial_epoch=start_step // spe, callbacks=callbacks,
                              shuffle=False, verbose=verbose)
        history = fit.history
        if not chief:
            shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"[train] already at step {start_step} >= steps={config.steps}: nothing to train.")

    step = cb._current_step(train_model)
    last = cb.latest_checkpoint(run_dir)
    if stop_nan.diverged_at is not None or checkpoints.nonfinite_at is not None:
        where = (f"The last good checkpoint is {last[1]} (step {last[0]}); it is kept."
                 if last else "No checkpoint had been written yet.")
        what = (f"step {stop_nan.diverged_at}: loss={stop_nan.loss}"
                if stop_nan.diverged_at is not None
                else f"step {checkpoints.nonfinite_at}: the weights hold NaN/Inf")
        raise cb.TrainingDivergedError(
            f"Training diverged at {what}. {where} "
            f"Lower the learning rate (base_lr={config.base_lr}) and resume or start again.")

    # 6. The inference network: single scale, uncompiled, no distribution scope.
    model = _inference_copy(config, base)
    if chief:
        atomic_save(lambda tmp: model.save(tmp), run_dir / MODEL_FILE, ".keras")
    return TrainResult(config=config, model=model, step=step, resumed_from=start_step,
                       checkpoint=last[1] if last else None, history=history, run_dir=run_dir)


def _prebuild_for_multi_worker(model, dataset):
    """Work around two Keras 3 bugs with `fit` under MultiWorkerMirroredStrategy
    (keras-team/keras#20585; TF 2.21, Keras 3.15):

    1. `_maybe_symbolic_build` eagerly reduces the first distributed batch with
       `strategy.reduce("MEAN", ...)`, which CollectiveAllReduceStrategy rejects
       ("Attempt to convert a value (PerReplica...)"). It only builds the loss /
       metric state, so we build that from the dataset's element spec and skip it.
    2. The per-step logs are reduced with `strategy.reduce("MEAN", v, axis=0)`,
       which fails on scalars. `train_step` returns them as shape [1] instead; the
       reduction then averages the replicas' values, as it does for MirroredStrategy.
    """
    import tensorflow as tf

    model._symbolic_build(data_batch=dataset.element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    train_step = model.train_step

    def train_step_1d_logs(data):
        return {k: tf.reshape(v, [1]) for k, v in train_step(data).items()}

    model.train_step = train_step_1d_logs


def _epoch_miou(config, base, data_dir, chief):
    """`val_miou` in the epoch logs (before CSVLogger / TensorBoard read them), from the
    chief's single-scale network on the first `val_miou_images` val images."""
    if not (config.val_miou_images and chief):
        return []
    from deeplab_keras.evaluation import evaluate_split

    def evaluate():
        return evaluate_split(
            base, data_dir, config.val_split, num_classes=config.num_classes,
            limit=config.val_miou_images, sbd_dir=config.sbd_dir, tfds=config.tfds,
            ignore_value=config.ignore_value, unknown_color=config.unknown_color,
            ignore_classes=config.ignore_classes,
            tfds_data_dir=config.tfds_data_dir, tfds_manual_dir=config.tfds_manual_dir,
            verbose=False).miou

    return [cb.EpochMeanIoU(evaluate)]


def _image_summaries(config, base, data_dir, log_dir, chief):
    """`ImageSummaries` of the first `image_summary_images` val images (files only)."""
    if not (config.image_summary_every and chief):
        return []
    if config.tfds:
        print("[train] image summaries read files: not available with tfds.", flush=True)
        return []
    from deeplab_keras.data import decode, voc
    from deeplab_keras.palette import VOC_PALETTE

    palette = VOC_PALETTE.copy()
    dataset = open_custom(config)
    if dataset is not None:
        examples = dataset.examples(config.val_split)
        read_label = dataset.read_label
        palette[:dataset.num_classes] = dataset.class_colors
    else:
        examples = voc.list_examples(str(data_dir), config.val_split, sbd_dir=config.sbd_dir)
        read_label = decode.read_label
    fixed = [(ex.name, decode.read_image(ex.image_path), read_label(ex.label_path))
             for ex in examples[:config.image_summary_images]]
    return [cb.ImageSummaries(base, fixed, Path(log_dir) / "logs" / "images",
                              config.image_summary_every, palette)]


def _tensorboard(log_dir):
    """The TensorBoard callback, when the `tensorboard` package (tf.summary's backend) exists."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        print("[train] the tensorboard package is not installed: no TensorBoard logs "
              "(pip install tensorboard); the CSV log is written.", flush=True)
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]


def run(config, *, devices=None, verbose="auto"):
    """`python train.py`: train, then evaluate on the val split and export a SavedModel.

    Returns:
      (TrainResult, EvalResult or None, export path or None).
    """
    result = train(config, devices=devices, verbose=verbose)
    config = result.config
    evaluation = export_path = None
    if not (config.multi_worker and not _chief_from_env()):
        if config.evaluate:
            from deeplab_keras.evaluation import evaluate_split, format_table

            data_dir = None if config.tfds else (config.data_dir or _builtin_dir())
            evaluation = evaluate_split(
                result.model, data_dir, config.val_split, num_classes=config.num_classes,
                scales=config.eval_scales, flip=config.eval_flip,
                class_names=_class_names(config), tfds=config.tfds,
                ignore_value=config.ignore_value, unknown_color=config.unknown_color,
                ignore_classes=config.ignore_classes,
                tfds_data_dir=config.tfds_data_dir, tfds_manual_dir=config.tfds_manual_dir)
            print(format_table(evaluation))
            evaluation.to_json(result.run_dir / "eval_results.json")
            print(f"mIoU on {config.val_split}: {evaluation.miou:.4f}", flush=True)
        if config.export_dir:
            from deeplab_keras.export import export_saved_model

            export_path = export_saved_model(result.model, Path(config.export_dir) / config.name)
            config.to_json(Path(export_path) / "train_config.json")
            from deeplab_keras.data import custom

            classes = result.run_dir / custom.CLASSES_FILE
            if classes.is_file():
                shutil.copyfile(classes, Path(export_path) / custom.CLASSES_FILE)
            print(f"SavedModel written to {export_path}", flush=True)
    return result, evaluation, export_path


def _chief_from_env():
    from deeplab_keras.training.strategy import read_tf_config

    task = read_tf_config()["task"]
    return task.get("type") == "chief" or (task.get("type") == "worker" and task.get("index") == 0)


def _builtin_dir():
    from deeplab_keras.data import builtin

    return builtin.ensure_builtin()


def _class_names(config):
    from deeplab_keras.data import builtin
    from deeplab_keras.palette import VOC_CLASSES

    if not config.tfds and not config.data_dir:
        return list(builtin.CLASS_NAMES)
    dataset = open_custom(config)
    if dataset is not None:
        return list(dataset.class_names)
    if config.num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(config.num_classes)]
