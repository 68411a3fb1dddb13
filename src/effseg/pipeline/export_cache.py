"""The export cache of the predict pipeline: a model's ONNX files per network size, keyed by its weights.

- a run folder ``RUN/`` -> ``RUN/runtime_cache/``; a checkpoint ``x.pt`` -> ``x.runtime_cache/``
  beside it; a shipped model name (or an unwritable folder) -> the user cache
  (``$EFFSEG_CACHE``, default ``~/.cache/effseg``) ``/<name>/``;
- inside: ``<weights hash>/<W>x<H>/`` with ``fp32.onnx``, ``int8.onnx``, the derived graphs
  (``*.labels.onnx``: argmax in the graph, uint8 out; ``*.lowres.onnx``: final upsample cut)
  and ``choice.json`` (``auto``'s measurements, agreements and pick). The hash is over the
  weights, so a changed checkpoint exports again (older hash folders are removed).

Every file is written to a temporary name and renamed (:func:`effseg.fileio.atomic_path`): an
interrupted export never leaves a half-written model for the next run to load. A cached file that
is damaged all the same (a disk error, a copy cut short) is found when first used by this process
(``onnx.checker``), removed and exported again, with a one-line note. The cache is bounded: at most
:data:`MAX_SIZES` network sizes per model; the least recently used size folder goes first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effseg.errors import ModelError
from effseg.fileio import atomic_path, atomic_write_text, make_dir
from effseg.pipeline.postprocess import add_argmax_to_onnx, cut_final_resize
from effseg.size import note_once

CACHE_ENV = "EFFSEG_CACHE"
MAX_SIZES = 8  # network-size folders kept per model (least recently used removed first)


def deploy_functions() -> tuple[Callable, Callable, Callable]:
    """``(export_onnx, onnx_session, quantize_onnx)`` from :mod:`effseg.deploy` (onnx is an extra);
    ``onnx_session(path, backend)`` opens a file in onnxruntime or OpenVINO."""
    from effseg.deploy.export import export_onnx
    from effseg.deploy.onnx_io import onnx_session
    from effseg.deploy.quantize import quantize_onnx

    return export_onnx, onnx_session, quantize_onnx


def user_cache_dir() -> Path:
    """``$EFFSEG_CACHE`` or ``~/.cache/effseg``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "effseg")


def cache_root(model_spec: str | Path) -> Path:
    """Where exports of ``model_spec`` are kept (see the module docstring)."""
    path = Path(str(model_spec))
    if path.is_dir():
        root = path / "runtime_cache"
    elif path.is_file():
        root = path.with_name(path.stem + ".runtime_cache")
    else:
        return user_cache_dir() / re.sub(r"[^A-Za-z0-9_.-]+", "_", str(model_spec))
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root):
            pass
        return root
    except OSError:
        return user_cache_dir() / re.sub(r"[^A-Za-z0-9_.-]+", "_", str(path.resolve()).strip("/"))


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 (hex) over the model's config and every state-dict tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps(getattr(model, "config", None), sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ExportCache:
    """Exported ONNX files of one model, per network size, keyed by the weights' hash."""

    def __init__(self, root: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        self.root = Path(root)
        self.model = model
        self.meta = meta
        self.hash = weights_hash(model)[:16]
        self._checked: set[Path] = set()

    def folder(self, net: tuple[int, int]) -> Path:
        """``root/<hash>/<W>x<H>`` for network size ``net`` = (H, W); stale hash folders removed."""
        base = self.root / self.hash
        if not base.is_dir() and self.root.is_dir():
            for old in self.root.iterdir():
                if old.is_dir() and re.fullmatch(r"[0-9a-f]{16}", old.name):
                    shutil.rmtree(old, ignore_errors=True)
        d = base / f"{net[1]}x{net[0]}"
        if d.is_dir():
            with contextlib.suppress(OSError):
                os.utime(d)  # most recently used
            return d
        make_dir(d, "the runtime cache")
        sizes = [p for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+x\d+", p.name)]
        for old in sorted(sizes, key=lambda p: p.stat().st_mtime)[: max(0, len(sizes) - MAX_SIZES)]:
            if old != d:
                shutil.rmtree(old, ignore_errors=True)
        return d

    def usable(self, path: Path) -> bool:
        """Whether the cached file ``path`` is there and whole. A damaged one (it fails
        ``onnx.checker``) is removed with a one-line note, so that the caller exports it again.
        Each file is checked once per process."""
        if not path.is_file():
            return False
        if path in self._checked:
            return True
        try:
            import onnx

            onnx.checker.check_model(onnx.load(str(path), load_external_data=False))
        except Exception as err:  # noqa: BLE001 - protobuf and the checker raise many types
            text = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            note_once(f"{path}: damaged runtime cache entry ({text}); exporting it again")
            with contextlib.suppress(OSError):
                path.unlink()
            return False
        self._checked.add(path)
        return True

    def onnx(self, net: tuple[int, int], precision: str, samples: Sequence[torch.Tensor] = ()) -> Path:
        """The fp32 (or int8, calibrated on ``samples``) file for ``net`` = (H, W); exported if missing."""
        export_onnx, _, quantize_onnx = deploy_functions()
        d = self.folder(net)
        fp32 = d / "fp32.onnx"
        if not self.usable(fp32):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's deprecation chatter
                export_onnx(self.model, fp32, input_size=net, meta=self.meta)  # atomic itself
            self._checked.add(fp32)
        if precision == "fp32":
            return fp32
        int8 = d / "int8.onnx"
        if not self.usable(int8):
            if not samples:
                raise ModelError(f"{int8}: int8 quantization needs sample frames to calibrate on")
            calib = [s.numpy().astype(np.float32) for s in samples[::2] or samples]
            with atomic_path(int8, "the runtime cache") as tmp:
                quantize_onnx(fp32, tmp, calib, calibration_source="first frames of the input")
            self._checked.add(int8)
            self.record(net, int8_agreement=self.agreement(fp32, int8, samples[1::2] or samples))
        return int8

    def derived(self, base: Path, kind: str) -> Path | None:
        """``base`` with ArgMax in the graph (``labels``) or without its final Resize (``lowres``,
        None when the graph has none to cut)."""
        path = base.with_suffix(f".{kind}.onnx")
        if path.is_file() and path.stat().st_size == 0:  # the marker of "no final Resize to cut"
            return None
        if self.usable(path):
            return path
        if kind == "labels":
            with atomic_path(path, "the runtime cache") as tmp:
                add_argmax_to_onnx(base, tmp)
            self._checked.add(path)
            return path
        with atomic_path(path, "the runtime cache") as tmp:
            ok = cut_final_resize(base, tmp)
            if not ok:
                Path(tmp).write_bytes(b"")
        if path.stat().st_size == 0:
            return None
        self._checked.add(path)
        return path

    def agreement(
        self, fp32: Path, other: Path, samples: Sequence[torch.Tensor], backend: str = "onnxruntime"
    ) -> float:
        """Fraction of pixels where ``other`` run by ``backend`` and ``fp32`` run by onnxruntime
        agree on the argmax over ``samples`` (normalised inputs)."""
        _, onnx_session, _ = deploy_functions()
        a, b = onnx_session(fp32), onnx_session(other, backend)
        same = total = 0
        for x in samples:
            arr = np.ascontiguousarray(x.numpy())
            la = a.run(None, {a.get_inputs()[0].name: arr})[0].argmax(1)
            lb = b.run(None, {b.get_inputs()[0].name: arr})[0].argmax(1)
            same += int((la == lb).sum())
            total += la.size
        return same / max(total, 1)

    def choice_path(self, net: tuple[int, int]) -> Path:
        return self.folder(net) / "choice.json"

    def read(self, net: tuple[int, int]) -> dict[str, Any]:
        path = self.choice_path(net)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def record(self, net: tuple[int, int], **values: Any) -> dict[str, Any]:
        data = self.read(net)
        data.update(values)
        atomic_write_text(
            self.choice_path(net), json.dumps(data, indent=2, sort_keys=True), "the runtime cache"
        )
        return data
