"""The one size convention of effseg.

In code a size is a named :class:`Size` ``(h, w)`` in pixels (height first, like the
``(B, C, H, W)`` tensors it describes); in every text a person types or reads (CLI options,
config files, logs, docs) it is ``WIDTHxHEIGHT``, e.g. ``480x360``.

>>> parse_size("480x360")
Size(h=360, w=480)
>>> format_size(Size(h=360, w=480))
'480x360'
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Literal, NamedTuple

from effseg.errors import SizeError

__all__ = ["Size", "parse_size", "format_size", "read_old_size", "note_once", "SIZE_FORM"]

#: How a size is spelled in text, for error messages and help strings.
SIZE_FORM = "WIDTHxHEIGHT such as 480x360"

_TEXT = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


class Size(NamedTuple):
    """A size in pixels: ``h`` rows (height) by ``w`` columns (width).

    A tuple ``(h, w)``, so ``h, w = size`` and ``tensor.shape[-2:] == size`` work; ``str(size)``
    is the ``WIDTHxHEIGHT`` text; :attr:`wh` is ``(w, h)`` for OpenCV and PIL.
    """

    h: int
    w: int

    @property
    def wh(self) -> tuple[int, int]:
        """``(width, height)``: the order of ``cv2.resize`` and ``PIL.Image.resize``."""
        return self.w, self.h

    def __str__(self) -> str:
        return f"{self.w}x{self.h}"


def _positive_int(value: object) -> int | None:
    """``value`` as an int if it is a positive integer (bool excluded, ``4.0`` accepted)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    if hasattr(value, "__index__"):  # numpy integers
        try:
            number = int(value.__index__())  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            return None
        return number if number > 0 else None
    return None


def parse_size(value: str | Sequence[int] | Size, what: str = "size") -> Size:
    """Read a size: ``"WIDTHxHEIGHT"`` text or an ``(h, w)`` pair -> :class:`Size`.

    Args:
        value: ``"480x360"`` (``x`` or ``X``, spaces allowed around the numbers), a
            :class:`Size`, or a sequence of two positive integers in code order ``(h, w)``.
        what: what the value is (a config key, a CLI option) for the error message.

    Returns:
        ``Size(h, w)`` in pixels; ``parse_size("480x360") == Size(h=360, w=480)``.

    Raises:
        SizeError: one line naming ``what``, the value and the expected form.
    """
    if isinstance(value, str):
        match = _TEXT.match(value)
        if match:
            w, h = int(match.group(1)), int(match.group(2))
            if w > 0 and h > 0:
                return Size(h=h, w=w)
            raise SizeError(f"{what} {value!r}: width and height must be positive ({SIZE_FORM})")
        raise SizeError(f"{what} {value!r}: expected {SIZE_FORM}")
    if isinstance(value, Sequence) and not isinstance(value, bytes) and len(value) == 2:
        h, w = _positive_int(value[0]), _positive_int(value[1])
        if h is not None and w is not None:
            return Size(h=h, w=w)
        pair = list(value)
        raise SizeError(f"{what} {pair!r}: expected two positive integers (height, width) or {SIZE_FORM}")
    raise SizeError(f"{what} {value!r}: expected {SIZE_FORM}")


def format_size(size: Sequence[int]) -> str:
    """``Size(h=360, w=480)`` (or any ``(h, w)`` pair) -> ``"480x360"``."""
    h, w = size
    return f"{int(w)}x{int(h)}"


_NOTED: set[str] = set()


def note_once(text: str) -> None:
    """Print ``effseg: note: <text>`` on stderr, once per process for the same text."""
    if text not in _NOTED:
        _NOTED.add(text)
        print(f"effseg: note: {text}", file=sys.stderr)


def read_old_size(value: str | Sequence[int] | Size, what: str, order: Literal["hw", "wh"]) -> Size:
    """:func:`parse_size` that still reads a setting's old spelling, a plain pair of numbers.

    A :class:`Size` or ``WIDTHxHEIGHT`` text is read as by :func:`parse_size`. A plain list or
    tuple is the spelling the setting had before the size convention: ``order="hw"`` for
    ``crop_size: [352, 480]`` (height, width), ``order="wh"`` for ``resize: [1024, 512]``
    (width, height). It is read in that order and a one-line note names the new spelling.

    Raises:
        SizeError: as :func:`parse_size`.
    """
    if isinstance(value, (str, Size)) or not isinstance(value, Sequence) or len(value) != 2:
        return parse_size(value, what)
    pair = list(value)
    names = "(height, width)" if order == "hw" else "(width, height)"
    try:
        size = parse_size(pair if order == "hw" else pair[::-1], what)
    except SizeError:
        raise SizeError(f"{what} {pair!r}: expected {SIZE_FORM} (or two positive integers {names})") from None
    note_once(f"{what}: {pair!r} is the old {names} spelling; write {format_size(size)} (WIDTHxHEIGHT)")
    return size
