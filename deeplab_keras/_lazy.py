"""Lazy attribute access for package `__init__` modules (PEP 562), so that
the heavy submodules of a package are imported only when first used."""

import importlib


def lazy_getattr(package, attributes, submodules=()):
    """A module-level `__getattr__` for `package`.

    Args:
      package: the package's `__name__`.
      attributes: {public name: module that defines it}, imported on first access.
      submodules: submodule names of `package` importable as attributes.

    Returns:
      The `__getattr__(name)` function to assign in the package's `__init__`.
    """

    def __getattr__(name):
        if name in attributes:
            return getattr(importlib.import_module(attributes[name]), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
