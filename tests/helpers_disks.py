"""Real full and read-only disks for the edge tests: a small tmpfs mounted in the test's folder.

Mounting needs root and a kernel that lets this process mount (a container may not): when it
cannot, the fixtures skip and say why. The tests that patch ``os`` functions run everywhere
(:func:`failing`). Also the small inputs the disk and file tests share: a folder dataset, a tiny
checkpoint, and the check that a command ended in exactly one error line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

#: The tiny network of the edge tests' checkpoints (3 classes: a, b, c).
TINY_MODEL = {"name": "lraspp", "backbone": "mobilenetv3_small", "num_classes": 3, "aux": False}


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


def folder_dataset(root: Path, n: int = 3) -> Path:
    """A ``folder`` dataset at ``root``: classes a, b, c and ``n`` random 32x24 image/mask pairs in
    each of train and val."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text("names: [a, b, c]\n")
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
                root / "images" / split / f"s{i}.png"
            )
            Image.fromarray(rng.integers(0, 3, (24, 32), dtype=np.uint8)).save(
                root / "masks" / split / f"s{i}.png"
            )
    return root


def tiny_checkpoint(path: Path, data_root: Path | None = None, bad: float | None = None) -> Path:
    """A checkpoint of :data:`TINY_MODEL` (seed 0); with ``data_root`` it carries a config for the
    folder dataset there (so ``effseg eval`` needs no ``--config``); ``bad`` is written into the
    first element of the fourth floating-point tensor (a NaN or an infinity)."""
    import effseg
    from effseg.config import config_from_dict

    torch.manual_seed(0)
    model = effseg.build_model(**TINY_MODEL)
    state = model.state_dict()
    if bad is not None:
        name = [k for k, v in state.items() if v.is_floating_point()][3]
        state[name].view(-1)[0] = bad
    ckpt = {"model": state, "model_config": model.config, "classes": ["a", "b", "c"]}
    if data_root is not None:
        cfg = {"model": TINY_MODEL, "data": {"dataset": "folder", "root": str(data_root)}}
        ckpt["config"] = config_from_dict(cfg).to_dict()
    torch.save(ckpt, path)
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed command printed on stderr (asserted: exactly one ``effseg: error:``)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("effseg: error: "), lines
    return lines[0]
