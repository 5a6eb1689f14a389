"""Reads PyTorch `.pth` state dicts (deeplab-pytorch releases) with or without torch.

With torch installed, `torch.load(weights_only=True)` reads the file. Without
it, a reader of both torch serialization formats rebuilds only tensors:

- zip (torch >= 1.6): `<root>/data.pkl` plus one raw file per storage in
  `<root>/data/<key>`;
- legacy (torch < 1.6, e.g. the 2019 deeplab-pytorch releases): a sequence of
  pickles (magic number, protocol version, system info, the object with
  persistent storage ids, the storage keys), then each storage as an int64
  element count and its raw little-endian bytes.

The unpickler is restricted: `find_class` allows only OrderedDict, the torch
tensor rebuild functions and the storage types, so a file cannot run code.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class PthError(ValueError):
    """A file that is not a readable PyTorch state dict of tensors."""


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGES[name])


def _rebuild_tensor(storage, offset, size, stride, *_):
    data = storage.array
    if not size:
        return np.array(data[offset], copy=True)
    itemsize = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
    return np.array(view, copy=True)


def _rebuild_parameter(tensor, *_):
    return tensor


class _Storage:
    def __init__(self, array):
        self.array = array


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise PthError(f"refusing to load {module}.{name}: only tensors and dicts are allowed")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise PthError(f"unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        else:
            raise PthError(f"unsupported storage type {storage_type!r}")
        return self._load_storage(key, dtype, numel)


def _read_zip(path):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise PthError("zip archive without data.pkl")
        root = pkl[0][: -len("data.pkl")]
        cache = {}

        def load_storage(key, dtype, numel):
            if key not in cache:
                raw = zf.read(f"{root}data/{key}")
                cache[key] = _Storage(np.frombuffer(raw, dtype.newbyteorder("<"), numel))
            return cache[key]

        return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


def _read_legacy(path):
    def no_storage(*_):
        raise PthError("a storage inside the file header")

    with open(path, "rb") as f:
        def plain():
            return _RestrictedUnpickler(f, no_storage).load()

        if plain() != _LEGACY_MAGIC:
            raise PthError("not a PyTorch file (bad magic number)")
        if plain() != 1001:
            raise PthError("unsupported legacy protocol version")
        plain()  # sys_info: endianness and type sizes
        storages = {}

        def load_storage(key, dtype, numel):  # the bytes follow the pickle: fill in later
            if key not in storages:
                storages[key] = _Storage(None)
                storages[key].meta = (dtype, numel)
            return storages[key]

        pending = []  # tensors are rebuilt once their storages are read

        def rebuild_later(storage, offset, size, stride, *_):
            placeholder = {}
            pending.append((placeholder, storage, offset, size, stride))
            return placeholder

        unpickler = _RestrictedUnpickler(f, load_storage)
        orig = unpickler.find_class

        def find_class(module, name):
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return rebuild_later
            return orig(module, name)

        unpickler.find_class = find_class
        result = unpickler.load()
        keys = plain()
        for key in keys:
            if key not in storages:
                raise PthError(f"storage {key} is listed but never used")
            dtype, numel = storages[key].meta
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(count * dtype.itemsize)
            if count != numel or len(raw) != count * dtype.itemsize:
                raise PthError(f"storage {key} is truncated")
            storages[key].array = np.frombuffer(raw, dtype.newbyteorder("<"), count)
        tensors = {id(ph): _rebuild_tensor(st, off, size, stride) for ph, st, off, size, stride in pending}
    return _replace_placeholders(result, tensors)


def _replace_placeholders(obj, tensors):
    if isinstance(obj, dict):
        if id(obj) in tensors:
            return tensors[id(obj)]
        return collections.OrderedDict((k, _replace_placeholders(v, tensors)) for k, v in obj.items())
    return obj


def _flatten(obj, what):
    """The state dict inside a checkpoint: the dict itself or its "state_dict"/"model" entry."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        out = {}
        for k, v in obj.items():
            if isinstance(v, np.ndarray):
                out[str(k)] = v
            elif hasattr(v, "detach"):  # torch.Tensor
                out[str(k)] = v.detach().cpu().numpy()
        if out:
            return out
    raise PthError(f"{what} holds no state dict of tensors")


def read_pth(path, use_torch=None):
    """Reads a .pth state dict as {key: NumPy array}.

    Args:
      path: str / os.PathLike.
      use_torch: True: torch.load (weights_only); False: the built-in safe
        reader; None: torch when it is importable.

    Returns:
      dict {str: np.ndarray} (float tensors keep their dtype).

    Raises:
      PthError (a ValueError) naming the file: not a PyTorch file, truncated,
        or holding something other than tensors.
    """
    path, what = str(path), repr(str(path))
    if use_torch is None:
        try:
            import torch  # noqa: F401  (optional)
            use_torch = True
        except ImportError:
            use_torch = False
    try:
        if use_torch:
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
        elif zipfile.is_zipfile(path):
            obj = _read_zip(path)
        else:
            obj = _read_legacy(path)
    except PthError as err:
        raise PthError(f"{what} is not a readable PyTorch state dict: {err}") from None
    except Exception as err:  # torch / pickle / zipfile raise many kinds on garbage
        raise PthError(f"{what} is not a readable PyTorch state dict (truncated or not a .pth): "
                       f"{type(err).__name__}: {err}") from None
    return _flatten(obj, what)
