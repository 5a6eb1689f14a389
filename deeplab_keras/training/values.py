"""Typed values of the training config: `key=value` strings and JSON values against field types.

`coerce(key, value, tp)` turns a command-line string (or a JSON value) into the
field's type (`int`, `float`, `bool`, `str`, `Optional[...]`, `tuple[...]`);
`check_type` checks a value already in Python. Both raise ValueError naming the
key, the expected type and the value.
"""

import types
import typing


_NONE_WORDS = ("none", "null", "")
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def optional_inner(tp):
    """X for Optional[X], else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def type_name(tp):
    inner = optional_inner(tp)
    if inner is not None:
        return f"{type_name(inner)} or none"
    if typing.get_origin(tp) is tuple:
        return f"comma-separated list of {typing.get_args(tp)[0].__name__}"
    return tp.__name__


def check_type(key, value, tp):
    inner = optional_inner(tp)
    if inner is not None:
        if value is None:
            return
        tp = inner
    ok = False
    if typing.get_origin(tp) is tuple:
        elem = typing.get_args(tp)[0]
        ok = isinstance(value, tuple) and all(
            isinstance(v, elem) and not isinstance(v, bool) for v in value)
    elif tp is float:
        ok = isinstance(value, float)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ValueError(f"{key} must be of type {type_name(tp)}. Received: {key}={value!r}")


def coerce(key, value, tp):
    """Convert `value` (a string from the command line, or a JSON value) to `tp`."""
    inner = optional_inner(tp)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        return coerce(key, value, inner)
    bad = ValueError(f"{key} must be of type {type_name(tp)}. Received: {key}={value!r}")
    if typing.get_origin(tp) is tuple:
        elem = typing.get_args(tp)[0]
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",") if p]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            raise bad
        try:
            return tuple(coerce(key, p, elem) for p in parts)
        except ValueError:
            raise bad from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:  # "6e3" or "6000.0"
                    as_float = float(value)
                except ValueError:
                    raise bad from None
                if as_float.is_integer():
                    return int(as_float)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise bad
