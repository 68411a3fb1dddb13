"""Run an exported ONNX file like an eval-mode Segmentor (onnxruntime or OpenVINO, on the CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effseg.deploy.onnx_io import check_onnx_metadata, onnx_session, read_onnx_metadata
from effseg.errors import ExportError

__all__ = ["OnnxSegmentor", "load_onnx_model"]


class OnnxSegmentor(nn.Module):
    """An exported ONNX model that behaves like an eval-mode Segmentor.

    ``forward(x)``: (B, 3, H, W) float tensor (normalised like training) -> logits
    (B, C, H, W) float tensor on ``x``'s device.  A static-size export is fed
    inputs bilinearly resized to its size, and the logits are resized back; a
    batch larger than the exported one is run one image at a time.  ``backend``: ``onnxruntime``
    or ``openvino`` (:func:`effseg.deploy.onnx_io.onnx_session`); ``precision`` is the session's
    (``fp32`` for onnxruntime; OpenVINO's may be ``bf16``).
    """

    def __init__(
        self,
        path: str | Path,
        meta: dict[str, Any],
        threads: int | None = None,
        opt_level: str = "all",
        backend: str = "onnxruntime",
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.meta = meta
        self.backend = backend
        self.session = onnx_session(path, backend, threads=threads, opt_level=opt_level)
        self.precision = getattr(self.session, "precision", "f32")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        self.static_batch = shape[0] if isinstance(shape[0], int) else None
        self.static_size = (shape[2], shape[3]) if all(isinstance(s, int) for s in shape[2:]) else None
        self.num_classes = meta.get("num_classes")
        self.classes = meta.get("classes")
        self.palette = np.asarray(meta["palette"], dtype=np.uint8) if meta.get("palette") else None
        self.config = meta.get("model_config")

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ExportError(f"{self.path}: expected input (B, 3, H, W), got {tuple(x.shape)}")
        size = tuple(x.shape[-2:])
        inp = x.float()
        if self.static_size is not None and size != tuple(self.static_size):
            inp = F.interpolate(inp, size=self.static_size, mode="bilinear", align_corners=False)
        if self.static_batch is not None and inp.shape[0] != self.static_batch:
            logits = torch.cat([self._run(inp[i : i + 1]) for i in range(inp.shape[0])])
        else:
            logits = self._run(inp)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.to(x.device)


def load_onnx_model(
    path: str | Path, threads: int | None = None, require_metadata: bool = True, backend: str = "onnxruntime"
) -> tuple[OnnxSegmentor, dict[str, Any]]:
    """Load an effseg ONNX file: ``(model_like, meta)``.

    ``model_like(x)`` maps a (B, 3, H, W) float tensor to (B, C, H, W) logits via
    ``backend`` (onnxruntime or openvino); ``meta`` holds ``classes``, ``palette``, ``mean``, ``std``,
    ``input_size`` (H, W), ``num_classes``, ``model_config`` and ``precision``.
    A file without effseg metadata (or lacking a required key) raises :class:`ExportError`
    naming what is missing, unless ``require_metadata`` is False (benchmarking a foreign graph).
    """
    meta = read_onnx_metadata(path)  # one-line ExportError for a missing or unreadable file
    if require_metadata:
        check_onnx_metadata(path, meta)
    model = OnnxSegmentor(path, meta, threads=threads, backend=backend)
    return model.eval(), meta
