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

The steps live in `training.inputs` (data, checks) and `training.networks`
(model, optimizer, loss, checkpoints); this module runs them in order.
`deeplab_keras.app.job.run(config)` adds what `python train.py` does after
training: evaluation on the val split and a SavedModel export (the layer above
training and export).

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
from deeplab_keras.training.config import TrainConfig
# The steps of the recipe, one module each; imported by name here too, so that
# `from deeplab_keras.training.trainer import build_networks` (and the others) keeps working.
from deeplab_keras.training.inputs import (DATA_REPORT_JSON, DATA_REPORT_TXT,  # noqa: F401
                                           check_data, class_names, make_train_dataset,
                                           open_custom, resolve_data)
from deeplab_keras.training.networks import (build_networks, compile_for_training,  # noqa: F401
                                             inference_copy, load_checkpoint_model, lsuv_init)
from deeplab_keras.training.strategy import is_chief, make_strategy, per_replica_batch
from deeplab_keras.utils.atomic import atomic_save, check_writable

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
    model = inference_copy(config, base)
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


