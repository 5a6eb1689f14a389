"""Checkpointing that never leaves a half-written file, and the run's other callbacks.

A checkpoint is `model.save_weights` of the training model, which in Keras 3
holds the model variables *and* the optimizer's (momentum buffers and the
iteration counter the learning-rate schedule reads), so restoring one continues
the run exactly where it stopped: same step, same schedule position, same
momentum. Files are written to a temporary name in the same directory, flushed
to disk, and renamed (`deeplab_keras.utils.atomic`), so a process killed at
any moment leaves only complete checkpoints under their final names.

    <run_dir>/checkpoints/ckpt-00000200.weights.h5
    <run_dir>/checkpoints/ckpt-00000400.weights.h5     (newest `keep` are kept)

Callbacks here:
  PeriodicCheckpoint   every N steps and at the end, only when weights are finite.
  StopOnNonFinite      TerminateOnNaN that remembers the step (divergence report).
  StopAtStep           ends `fit` at the global step `steps` (resumed runs).
  LearningRateLogger   adds the current learning rate to the epoch logs (CSV).
  ImageSummaries       TensorBoard images of fixed val images: image | prediction |
                       ground truth, every N steps.
"""

import math
import re
from pathlib import Path

import keras
import numpy as np
from keras import ops

from deeplab_keras.utils.atomic import atomic_save

CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.weights\.h5$")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


# ---------------------------------------------------------------------------
# Checkpoint files.

def remove_stale_temporaries(run_dir):
    """Delete temporary files left by a checkpoint write that was killed (never complete)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    removed = []
    if directory.is_dir():
        for p in directory.glob(".tmp-*"):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def checkpoint_path(run_dir, step):
    """`<run_dir>/checkpoints/ckpt-<step:08d>.weights.h5`."""
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{int(step):08d}.weights.h5"


def list_checkpoints(run_dir):
    """[(step, path)] of the complete checkpoints of a run, oldest first."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir):
    """(step, path) of the newest checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def weights_are_finite(model):
    """True when no float variable of `model` (optimizer state excluded) holds NaN/Inf."""
    import tensorflow as tf

    for v in model.weights:
        if v.dtype in ("float16", "bfloat16", "float32", "float64"):
            if not bool(tf.reduce_all(tf.math.is_finite(v.value))):
                return False
    return True


def save_checkpoint(model, run_dir, step, keep=3):
    """Atomically write the model + optimizer state at `step`; prune to `keep` newest.

    Returns:
      Path of the checkpoint.
    """
    path = atomic_save(lambda tmp: model.save_weights(tmp), checkpoint_path(run_dir, step),
                       ".weights.h5")
    for _, old in list_checkpoints(run_dir)[:-keep]:
        try:
            old.unlink()
        except FileNotFoundError:
            pass
    return path


def restore_checkpoint(model, path):
    """Load a checkpoint written by `save_checkpoint` into `model` and its optimizer.

    The optimizer must be built (`optimizer.build(model.trainable_variables)`) so
    that its state has somewhere to go; the restored iteration counter is checked
    against the step in the file name.

    Args:
      model: the compiled training model, same architecture as the checkpoint's.
      path: the checkpoint file.

    Returns:
      The restored step (int).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file does not fit the model (another architecture or
        num_classes), or it holds no optimizer state for this optimizer.
    """
    import warnings

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        raise ValueError("Build the optimizer before restoring (optimizer.build(model.trainable_variables)).")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(
            f"Checkpoint {path} does not fit this model ({model.name}, "
            f"{model.count_params():,} parameters): it was probably written by another "
            f"architecture or another num_classes / width_multiplier. {_mismatch(e)}") from None
    skipped = [str(w.message) for w in caught
               if "Skipping variable loading" in str(w.message)
               or "expected" in str(w.message).lower() and "variables" in str(w.message)]
    if skipped:
        raise ValueError(f"Checkpoint {path} does not fit this model ({model.name}): "
                         f"{skipped[0]}")
    m = _CKPT_RE.match(path.name)
    if optimizer is not None and m:
        restored = int(ops.convert_to_numpy(optimizer.iterations))
        if restored != int(m.group(1)):
            raise ValueError(f"Checkpoint {path} restored optimizer step {restored}, expected "
                             f"{int(m.group(1))}: the optimizer state did not load.")
        return restored
    return int(m.group(1)) if m else 0


def _mismatch(error):
    """A one-line summary of a Keras weight-loading error (not its tensor dumps)."""
    text = str(error)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    where = re.search(r"Variable path=([^,\s]+)", text)
    if shapes:
        return (f"First mismatch: {where.group(1) if where else 'a variable'} has shape "
                f"{shapes.group(1)} in this model but {shapes.group(2)} in the checkpoint.")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"Details: {first[:300]}"


def _current_step(model):
    return int(ops.convert_to_numpy(model.optimizer.iterations))


# ---------------------------------------------------------------------------
# Callbacks.

class StopOnNonFinite(keras.callbacks.Callback):
    """Stop as soon as the loss is NaN or Inf, and remember where.

    Like `keras.callbacks.TerminateOnNaN`, plus `diverged_at` (the global step)
    and `loss` (the value seen) for the trainer's error message.
    """

    def __init__(self):
        super().__init__()
        self.diverged_at = None
        self.loss = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(np.asarray(loss))
        if not math.isfinite(loss):
            self.diverged_at = _current_step(self.model)
            self.loss = loss
            self.model.stop_training = True


class StopAtStep(keras.callbacks.Callback):
    """End training once the optimizer has taken `steps` steps in total."""

    def __init__(self, steps):
        super().__init__()
        self.steps = int(steps)

    def on_train_batch_end(self, batch, logs=None):
        if _current_step(self.model) >= self.steps:
            self.model.stop_training = True


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Atomic checkpoint every `every` global steps and at the end of training.

    A checkpoint is only written when the loss and every weight are finite, so a
    diverging run keeps its last good checkpoint; non-finite weights found at a
    checkpoint also stop training (`nonfinite_at` holds the step). Under multi-worker training only
    the chief writes (`is_chief`); every worker reads the same directory on resume.

    Args:
      run_dir: the run directory (files go to `<run_dir>/checkpoints/`).
      every: steps between checkpoints.
      keep: newest checkpoints kept.
      is_chief: whether this process writes.
      verbose: print a line per checkpoint.
    """

    def __init__(self, run_dir, every, keep=3, is_chief=True, verbose=True):
        super().__init__()
        if every <= 0 or keep <= 0:
            raise ValueError(f"every and keep must be positive. Received: every={every}, keep={keep}")
        self.run_dir = Path(run_dir)
        self.every = int(every)
        self.keep = int(keep)
        self.is_chief = is_chief
        self.verbose = verbose
        self.last_saved_step = None
        self.last_saved_path = None
        self.nonfinite_at = None
        self._bad = False

    def _save(self, step):
        if not self.is_chief or step == self.last_saved_step or step == 0:
            return
        if self._bad:
            return
        if not weights_are_finite(self.model):
            # Nothing useful can follow (a ReLU network with Inf weights can still show a
            # finite loss for a while): stop now and keep the last good checkpoint.
            self._bad = True
            self.nonfinite_at = step
            self.model.stop_training = True
            return
        self.last_saved_path = save_checkpoint(self.model, self.run_dir, step, self.keep)
        self.last_saved_step = step
        if self.verbose:
            print(f"\n[checkpoint] step {step}: {self.last_saved_path}", flush=True)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(np.asarray(loss))):
            self._bad = True
            return
        step = _current_step(self.model)
        if step % self.every == 0:
            self._save(step)

    def on_train_end(self, logs=None):
        self._save(_current_step(self.model))


class LearningRateLogger(keras.callbacks.Callback):
    """Put the backbone learning rate of the current step into the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            opt = self.model.optimizer
            logs["learning_rate"] = float(ops.convert_to_numpy(opt.learning_rate))


class EpochMeanIoU(keras.callbacks.Callback):
    """Adds `val_miou` to each epoch's logs, so CSVLogger / TensorBoard (placed after
    this callback) record it next to the loss and the curves show both.

    Args:
      evaluate: a function of no arguments returning the current mIoU (a float),
        e.g. `evaluate_split(model, ..., limit=N, verbose=False).miou`.
    """

    def __init__(self, evaluate):
        super().__init__()
        self.evaluate = evaluate

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["val_miou"] = float(self.evaluate())


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard image summaries: a few fixed val images with the current
    prediction and the ground truth, side by side, every `every` global steps
    (and at the end of training).

    Each image is one summary `val_images/<name>`: [image | prediction |
    ground truth], labels drawn with `palette` (255 in its colour).

    Args:
      model: the single-scale network (logits at 1/8; shares the trained weights).
      examples: list of (name, uint8 [H, W, 3] RGB image, uint8 [H, W] labels).
      log_dir: where the summary writer writes (e.g. `<run>/logs/images`).
      every: steps between summaries (> 0).
      palette: uint8 [256, 3] class colours.
    """

    def __init__(self, model, examples, log_dir, every, palette):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int. Received: every={every!r}")
        self.net = model
        self.examples = list(examples)
        self.log_dir = str(log_dir)
        self.every = every
        self.palette = np.asarray(palette, np.uint8)
        self.writer = None
        self.last_step = None

    def _panels(self):
        import tensorflow as tf

        from deeplab_keras.preprocessing import preprocess_images

        for name, image, label in self.examples:
            logits = self.net(preprocess_images(tf.cast(image[None], tf.float32)),
                              training=False)
            logits = tf.image.resize(tf.cast(logits, tf.float32), image.shape[:2],
                                     method="bilinear")
            pred = np.asarray(tf.argmax(logits[0], axis=-1), np.int64)
            yield name, np.concatenate([image, self.palette[pred], self.palette[label]], axis=1)

    def write(self, step):
        import tensorflow as tf

        if step == self.last_step:
            return
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)
        with self.writer.as_default():
            for name, panel in self._panels():
                tf.summary.image(f"val_images/{name}", panel[None], step=step,
                                 description="image | prediction | ground truth")
        self.writer.flush()
        self.last_step = step

    def on_train_batch_end(self, batch, logs=None):
        step = _current_step(self.model)
        if step % self.every == 0:
            self.write(step)

    def on_train_end(self, logs=None):
        self.write(_current_step(self.model))
        if self.writer is not None:
            self.writer.close()
            self.writer = None
