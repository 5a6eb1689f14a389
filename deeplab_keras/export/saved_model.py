"""SavedModel export for TF Serving: savedmodels/<name>/<version>/.

TF Serving watches a model base path and serves its highest numeric
sub-directory. A version directory must therefore appear complete or not at all:
the SavedModel is written to a hidden temporary directory next to it and renamed
into place (one `rename(2)`, atomic on POSIX). A killed export leaves only a
hidden `.tmp-*` directory, which TF Serving ignores and the next export removes.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import keras

from deeplab_keras.export.serving import (
    DEFAULT_MAX_IMAGE_PIXELS,
    LABEL_PAD_VALUE,
    ServingModule,
    export_info,
    resolve_crf,
)

SIGNATURES = ("serving_default", "serving_images", "serving_logits")
CONFIG_FILENAME = "deeplab_export.json"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


def existing_versions(export_dir):
    """Sorted numeric version numbers present under `export_dir`."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        return []
    return sorted(int(p.name) for p in export_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _check_version(version):
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative int or None. Received: version={version!r}")
    return version


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(export_dir):
    """Remove .tmp-/.old- directories left by exports whose process is gone."""
    pattern = re.compile(rf"^({re.escape(_TMP_PREFIX)}|{re.escape(_OLD_PREFIX)})\d+-(\d+)-")
    for path in export_dir.iterdir():
        match = pattern.match(path.name)
        if match and not _pid_alive(int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True)


def prepare_export_dir(export_dir, version, overwrite):
    """Validate the target, choose the version. Returns (export_dir, version)."""
    version = _check_version(version)
    export_dir = Path(export_dir)
    if export_dir.exists() and not export_dir.is_dir():
        raise NotADirectoryError(f"export_dir exists and is not a directory: {export_dir}")
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # keep the class (PermissionError, FileNotFoundError, ...)
        raise type(e)(e.errno, f"Cannot create export_dir {export_dir}: {e.strerror}") from e
    if not os.access(export_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"export_dir is not writable: {export_dir}")
    _remove_stale_temporaries(export_dir)
    if version is None:
        versions = existing_versions(export_dir)
        version = versions[-1] + 1 if versions else 1
    target = export_dir / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"Export version {version} already exists: {target}. Pass overwrite=True "
            "(--overwrite) to replace it, or version=None for the next free number."
        )
    return export_dir, version


def publish_directory(tmp_dir, target, overwrite):
    """Rename a complete temporary directory to `target` atomically.

    With overwrite=True an existing target is first renamed aside (so at every
    moment either the old or the new version is complete), then deleted.
    """
    tmp_dir, target = Path(tmp_dir), Path(target)
    old = None
    if target.exists():
        if not overwrite:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise FileExistsError(f"Export version already exists: {target}")
        old = target.with_name(f"{_OLD_PREFIX}{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    try:
        os.rename(tmp_dir, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)
    return target


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_dir(export_dir, version):
    """A fresh hidden directory in `export_dir` named after the version and pid."""
    return Path(export_dir) / f"{_TMP_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def export_saved_model(model, export_dir, *, crf=None, version=None, overwrite=False,
                       include_probabilities=False, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Write a TF Serving SavedModel to `export_dir/<version>/`.

    Keras 3's export API (`keras.export.ExportArchive`) writes three
    signatures; pre-processing (Caffe BGR minus mean), the bilinear upsampling
    of the stride-8 logits (DeepLab v2, TPAMI 2017, §3.1) and optionally the
    dense CRF (§3.3) run inside the graph:

      serving_default(image_bytes: tf.string [B]) -> {
          "labels": int32 [B, Hmax, Wmax]   each image's labels at its original
                                            size; a batch of different sizes is
                                            padded with 255 to the largest one,
          "height": int32 [B], "width": int32 [B]   each image's size,
          "probabilities": float32 [B, Hmax, Wmax, C]   (include_probabilities)}
      serving_images(images: float32 [B, H, W, 3], RGB 0-255) -> {
          "labels": int32 [B, H, W], "probabilities" (optional)}
      serving_logits(images: float32 [B, H, W, 3], RGB 0-255) -> {
          "logits": float32 [B, h8, w8, C]}

    Encoded images may be JPEG, PNG, GIF or BMP of any size up to
    `max_image_pixels`; grayscale is expanded to RGB and alpha is dropped.
    Bytes that are not an image, or a too large image, make the call fail with
    `InvalidArgumentError` (HTTP 400 in TF Serving) naming the problem.

    The directory appears atomically (written to a hidden temporary directory,
    then renamed). A JSON file `deeplab_export.json` next to `saved_model.pb`
    records the model name, number of classes, CRF settings and signatures.

    Args:
      model: a DeepLab Keras model (`deeplab_keras.models.build_model`): input
        preprocessed float32 [B, H, W, 3], output logits [B, h8, w8, C].
      export_dir: the model base path, e.g. "savedmodels/vgg16_largefov".
      crf: None, True (DenseCRF with its defaults) or a
        `deeplab_keras.crf.DenseCRF` instance, run after the upsampling.
      version: int version directory, or None for (highest existing) + 1.
      overwrite: replace an existing version directory.
      include_probabilities: also return per-class probabilities.
      max_image_pixels: largest H * W the bytes signature accepts.

    Returns:
      Path of the version directory, e.g. savedmodels/vgg16_largefov/1.

    Raises:
      FileExistsError: the version exists and overwrite is False.
      PermissionError: export_dir cannot be created or written.
      ValueError: a bad argument.

    Example:
      >>> from deeplab_keras.models import build_model
      >>> model = build_model("vgg16_largefov", num_classes=21)
      >>> path = export_saved_model(model, "savedmodels/vgg16_largefov")
      >>> served = tf.saved_model.load(str(path))
      >>> served.signatures["serving_default"](
      ...     image_bytes=tf.constant([open("cat.jpg", "rb").read()]))["labels"]
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model. Received: model={type(model).__name__}")
    crf_layer = resolve_crf(crf)
    export_dir, version = prepare_export_dir(export_dir, version, overwrite)
    module = ServingModule(model, crf=crf_layer, include_probabilities=include_probabilities,
                           max_image_pixels=max_image_pixels)

    archive = keras.export.ExportArchive()
    # No `archive.track(model)`: the endpoints capture the weights already, and
    # tracking the model saves every weight a second time (Keras 3.15 writes
    # both `variables/` and `_all_variables/`), doubling the SavedModel size.
    archive.add_endpoint("serving_default", module.serve_bytes)
    archive.add_endpoint("serving_images", module.serve_images)
    archive.add_endpoint("serving_logits", module.serve_logits)

    tmp = temporary_dir(export_dir, version)
    try:
        archive.write_out(str(tmp), verbose=False)
        config = export_info(
            model, crf_layer, format="saved_model", version=version,
            signatures=list(SIGNATURES), bytes_input="image_bytes",
            label_pad_value=LABEL_PAD_VALUE, include_probabilities=bool(include_probabilities),
            max_image_pixels=max_image_pixels,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        with open(tmp / CONFIG_FILENAME, "w") as f:
            json.dump(config, f, indent=2)
        return publish_directory(tmp, export_dir / str(version), overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
