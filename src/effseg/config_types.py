"""Reading configs: a safe YAML loader and the type checks of the config dataclasses.

* :func:`load_yaml` parses plain data only (``yaml.SafeLoader``: no Python objects, nothing is
  ever evaluated) and reads numbers in the forms people type: YAML 1.1 makes ``1e-3`` and
  ``1e6`` strings, here they are floats like ``0.001`` and ``.5``.
* :func:`coerce` checks a value against a dataclass field's type hint: ints are accepted for
  floats (and integral floats such as ``1e4`` for ints), numbers must be finite (``.nan``,
  ``.inf`` are refused), sizes are ``WIDTHxHEIGHT`` text (:mod:`effseg.size`; the old
  ``[H, W]`` list still loads, with a note). Errors are one-line :class:`ConfigError`\\ s
  naming the key.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from typing import Any, Literal, Union

import yaml

from effseg.errors import ConfigError, SizeError
from effseg.size import SIZE_FORM, Size, read_old_size

__all__ = ["load_yaml", "coerce", "suggest", "type_name"]


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (never constructs Python objects) that reads numbers as people type them.

    YAML 1.1 makes ``1e-3``, ``1e6`` and ``1.5e3`` strings (it wants ``1.0e-3``, ``1.0e+6``); this
    loader adds YAML 1.2's float pattern, resolved to ``float`` by the safe constructor (no eval).
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    # no leading zeros before the exponent: ``0016E5`` (a CamVid drive name) stays text
    re.compile(r"^[-+]?(?:(?:0|[1-9][0-9_]*)(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text safely: plain data only, numbers in every usual form (``1e-3``, ``.5``)."""
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: plain data only


def suggest(name: str, options: typing.Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the option nearest to ``name``, or ``""``."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def type_name(tp: Any) -> str:
    """A type hint as a person reads it: ``float | null``, ``list of int``, ``WIDTHxHEIGHT``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if tp is Size:
        return "WIDTHxHEIGHT"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Return ``value`` checked against ``tp`` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}key '{key}': expected {type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is Any:
        return value
    if tp is Size:
        return _size(value, key, where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = suggest(str(value), [str(c) for c in choices])
            raise ConfigError(
                f"{where}key '{key}': expected one of {', '.join(map(repr, choices))}, got {value!r}{hint}"
            )
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if Size in args:  # Size | None: the size's own message
            return _size(value, key, where)
        if float in args and isinstance(value, float):  # float | None: the number's own message
            return coerce(value, float, key, where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, where)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        return [coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():  # 1e4 iterations
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"{where}key '{key}': expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config field type {tp!r}")  # a bug in this module


def _size(value: Any, key: str, where: str) -> Size:
    """A size setting: ``WIDTHxHEIGHT`` text; the old ``[H, W]`` list still loads, with a note."""
    try:
        return read_old_size(value, f"{where}{key}", "hw")
    except SizeError:
        raise SizeError(f"{where}key '{key}': expected {SIZE_FORM}, got {value!r}") from None
