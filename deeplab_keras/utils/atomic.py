"""Atomic file writes: a temporary file in the same directory, flushed, then renamed.

`os.replace` is atomic on POSIX filesystems, so a process killed at any moment
leaves either the previous file or the complete new one under the final name,
never a partial file. No TensorFlow import and nothing of the package here:
this is the ground layer, which data, evaluation, training and export all
write through.
"""

import os
import tempfile
from pathlib import Path


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    """Write `text` to `path` through a temporary file in the same directory + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(save_fn, path, suffix):
    """Call `save_fn(tmp_path)` then rename `tmp_path` onto `path`.

    Args:
      save_fn: writes a complete file at the path it is given.
      path: final path.
      suffix: extension the writer requires of its file name (".weights.h5", ".keras").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{os.getpid()}-{path.name[:-len(suffix)]}{suffix}"
    try:
        save_fn(str(tmp))
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


def check_writable(directory):
    """Create `directory` if needed and prove it is writable (clear error otherwise)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"Output directory {directory} is not writable: "
                              f"{e.strerror or e}. Pass another --output-dir.") from None
    return directory
