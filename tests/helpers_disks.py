"""Real full and read-only disks for the edge tests: a small tmpfs mounted in the test's folder.

Mounting needs root and a kernel that lets this process mount (a container may not): when it
cannot, the fixtures skip and say why. The tests that patch ``os`` functions run everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _mount(path: Path, size_kb: int) -> str | None:
    """Mount a tmpfs of ``size_kb`` KiB on ``path``; None on success, else why not."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else f"cannot mount a tmpfs here ({done.stderr.strip()})"


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Write a filler file into ``path`` until its file system is full."""
    with contextlib.suppress(OSError), open(path / ".filler", "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int = 256) -> Iterator[Path]:
    why = _mount(path, size_kb)
    if why:
        pytest.skip(why)
    try:
        yield path
    finally:
        _umount(path)


def read_only(path: Path) -> None:
    """Remount the tmpfs at ``path`` read-only (what was written stays readable)."""
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only ({done.stderr.strip()})")
    with pytest.raises(OSError) as err:
        (path / ".probe").write_bytes(b"x")
    assert err.value.errno == errno.EROFS


def failing(code: int) -> Callable[..., None]:
    """A stand-in for an ``os`` function that fails with ``code`` (ENOSPC, EROFS, ...)."""

    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail
