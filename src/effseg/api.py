"""The Python entry point for inference: ``effseg.load(path) -> Predictor``.

>>> import effseg
>>> model = effseg.load("runs/pspnet_r18")          # run dir, .pt, .onnx or a shipped "camvid-<model>"
>>> labels = model.predict("street.jpg")             # (H, W) uint8 class ids, input resolution
>>> model.classes[labels[0, 0]], model.palette.shape  # ('road', (19, 3))
>>> rgb = model.colorize(labels)                     # (H, W, 3) uint8 in the dataset palette
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from effseg.config import IMAGENET_MEAN, IMAGENET_STD
from effseg.data.image import IMAGE_SUFFIXES, ImageLike, read_image
from effseg.data.visualize import colorize, overlay
from effseg.device import resolve_device
from effseg.errors import CheckpointError, ModelError
from effseg.models.contract import class_ids, eval_logits
from effseg.size import Size, read_old_size

# The one image reader and suffix list live in effseg.data.image; re-exported for API users.
IMAGE_EXTENSIONS = IMAGE_SUFFIXES
__all__ = ["IMAGE_EXTENSIONS", "Predictor", "colorize", "load", "overlay", "parse_size", "read_image"]


#: What the API accepts as a network input size (for type hints).
InputSize = str | Size | Sequence[int]


def _input_size(value: InputSize | None) -> Size | None:
    """The network input size the API accepts -> :class:`~effseg.size.Size` ``(h, w)``, ``None`` kept.

    A :class:`~effseg.size.Size` or ``"WIDTHxHEIGHT"`` text such as ``"1024x512"`` (the convention
    of :mod:`effseg.size`). A plain pair is the ``(width, height)`` that effseg 0.1 documented
    (``effseg.load(path, input_size=(1024, 512))``): still read, with a one-line note naming the
    new spelling. Raises :class:`~effseg.errors.SizeError` (one line) for anything else.
    """
    return None if value is None else read_old_size(value, "input size", "wh")


def parse_size(text: InputSize | None) -> tuple[int, int] | None:
    """``(width, height)`` of :func:`_input_size` (``"1024x512"`` -> ``(1024, 512)``), as effseg 0.1
    returned it; new code reads sizes with :func:`effseg.size.parse_size` (-> ``Size(h, w)``)."""
    size = _input_size(text)
    return None if size is None else size.wh


# --------------------------------------------------------------------------- predictor


class Predictor:
    """A loaded model plus everything needed to turn images into class-id maps.

    Build with :func:`effseg.load`. ``predict`` takes a path, a PIL image or an
    ``(H, W, 3)`` uint8 array (or a list of them, run in batches) and returns ``(H, W)``
    class ids at the input's resolution.

    ``forward`` maps a normalised ``(B, 3, h, w)`` batch to logits ``(B, C, h, w)`` (an effseg
    model in eval mode, see :mod:`effseg.models.contract`). ``input_size`` (and
    ``fixed_input_size``, the size of a static ONNX graph) is the size the network sees: a
    :class:`~effseg.size.Size` or ``"WIDTHxHEIGHT"`` text (a plain pair is effseg 0.1's
    ``(width, height)``); ``None``: each image's own size. The attributes hold a
    :class:`~effseg.size.Size` ``(h, w)`` or ``None``.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        classes: Sequence[str],
        palette: np.ndarray | Sequence[Sequence[int]] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        input_size: InputSize | None = None,
        fixed_input_size: InputSize | None = None,
        model: Any = None,
        source: str = "",
        batch_size: int = 4,
    ) -> None:
        self._forward = forward
        self.model = model
        self.classes: list[str] = list(classes)
        self.num_classes = len(self.classes)
        self.palette: np.ndarray = _as_palette(palette, self.num_classes)
        self.device = torch.device(device)
        if mean is None or std is None:  # ImageNet statistics, defined once in effseg.config
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        mean_arr, std_arr = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
        if mean_arr.max() > 1.0 or std_arr.max() > 1.0:  # recorded in 0..255 units
            mean_arr, std_arr = mean_arr / 255.0, std_arr / 255.0
        self.mean = torch.tensor(mean_arr, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std_arr, device=self.device).view(1, 3, 1, 1)
        self.fixed_input_size: Size | None = _input_size(fixed_input_size)
        self.input_size: Size | None = self.fixed_input_size or _input_size(input_size)
        self.source = source
        self.batch_size = max(1, int(batch_size))
        self.tta: str | None = None  # default test-time augmentation of predict (see predict)

    def __repr__(self) -> str:
        size = f", input_size={self.input_size}" if self.input_size else ""
        return f"Predictor({self.source!r}, classes={self.num_classes}, device={self.device}{size})"

    # -- inference -----------------------------------------------------------------

    def predict(
        self,
        image: ImageLike | Sequence[ImageLike],
        input_size: InputSize | None = None,
        batch_size: int | None = None,
        tta: str | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Class ids ``(H, W)`` uint8 (int64 beyond 255 classes) for one image, or a list for a list.

        ``input_size`` (a :class:`~effseg.size.Size` or ``"WIDTHxHEIGHT"`` text; a plain pair is
        effseg 0.1's ``(width, height)``) resizes the image for the network; the logits are resized
        back (bilinear) to the original resolution before the argmax. Default: the predictor's.
        ``tta``: test-time augmentation, ``"flip"`` or ``"flip,0.75,1.0,1.25"`` (scales of the
        network size; the softmax of the passes is averaged, :mod:`effseg.engine.tta`, the same
        code as ``effseg eval --tta``); each pass costs about one plain prediction.
        Default: the predictor's ``tta`` attribute (``None``: one pass).
        """
        if isinstance(image, (list, tuple)):
            arrays = [read_image(x) for x in image]
            return self.predict_arrays(arrays, input_size=input_size, batch_size=batch_size, tta=tta)
        return self.predict_arrays([read_image(image)], input_size=input_size, batch_size=1, tta=tta)[0]

    __call__ = predict

    def predict_arrays(
        self,
        images: Sequence[np.ndarray],
        input_size: InputSize | None = None,
        batch_size: int | None = None,
        tta: str | None = None,
    ) -> list[np.ndarray]:
        """``(H, W, 3)`` uint8 RGB arrays -> class-id maps, batching images of equal network size
        (``tta`` as in :meth:`predict`)."""
        from effseg.engine.tta import parse_tta

        size = _input_size(input_size) if input_size is not None else self.input_size
        fixed = self.fixed_input_size
        if fixed is not None and size != fixed:
            raise ModelError(f"{self.source}: the ONNX graph has a fixed input size {fixed}; got {size}")
        scales, flip = parse_tta(tta if tta is not None else self.tta)
        if fixed is not None and scales != [1.0]:
            raise ModelError(
                f"{self.source}: the ONNX graph has a fixed input size {fixed}; TTA scales "
                f"{','.join(f'{s:g}' for s in scales)} need a model that takes any size (flip works)"
            )
        bs = max(1, int(batch_size or self.batch_size))
        out: list[np.ndarray | None] = [None] * len(images)
        # Group by the size the network sees, so a batch is one tensor; keep input order.
        groups: dict[Size, list[int]] = {}
        for i, img in enumerate(images):
            net_size = size or Size(h=img.shape[0], w=img.shape[1])
            groups.setdefault(net_size, []).append(i)
        for net_size, idx in groups.items():
            for start in range(0, len(idx), bs):
                chunk = idx[start : start + bs]
                logits = self._logits([images[i] for i in chunk], net_size, scales, flip)
                for j, i in enumerate(chunk):
                    H, W = images[i].shape[:2]
                    lg = logits[j : j + 1]
                    if lg.shape[-2:] != (H, W):
                        lg = F.interpolate(lg, size=(H, W), mode="bilinear", align_corners=False)
                    ids = class_ids(lg)[0].cpu().numpy()
                    out[i] = ids.astype(np.uint8 if self.num_classes <= 256 else np.int64)
        return out  # type: ignore[return-value]

    def _logits(
        self, images: Sequence[np.ndarray], size: Size, scales: Sequence[float] = (1.0,), flip: bool = False
    ) -> torch.Tensor:
        """Scores ``(B, C, h, w)`` at the network ``size``: logits, or with TTA (``scales`` of
        ``size``, ``flip``) the mean softmax of the passes (:func:`effseg.engine.tta.predict_scores`)."""
        from effseg.engine.tta import predict_scores

        h, w = size
        with torch.inference_mode():
            batch = torch.from_numpy(np.stack(images))  # a fresh, writable (B, H, W, 3) copy
            x = batch.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            if x.shape[-2:] != (h, w):
                # antialias: downscaling a photo for the network should average, not alias
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            x = (x - self.mean) / self.std
            if list(scales) != [1.0] or flip:
                return predict_scores(
                    self._checked_forward, x, (h, w), self.num_classes, scales=scales, flip=flip
                )
            return self._checked_forward(x)

    def _checked_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` as float logits ``(B, C, h, w)``, or a one-line ModelError."""
        return eval_logits(self._forward(x), self.num_classes, self.source)

    # -- visualisation ---------------------------------------------------------------

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 in the palette (ids outside it, e.g. 255, black)."""
        return colorize(labels, self.palette)

    def overlay(self, image: ImageLike, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """Blend the colourised ``labels`` over ``image``: ``(1 - alpha) * image + alpha * colour``."""
        return overlay(read_image(image), colorize(labels, self.palette), alpha)


def _as_palette(palette: Any, num_classes: int) -> np.ndarray:
    if palette is None or len(palette) == 0:
        # Distinct, deterministic colours when a checkpoint carries none (matplotlib's tab20 cycle).
        from matplotlib import colormaps

        cmap = colormaps["tab20"]
        return np.array([[int(c * 255) for c in cmap(i % 20)[:3]] for i in range(num_classes)], np.uint8)
    arr = np.asarray(palette, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) < num_classes:
        raise CheckpointError(f"palette has shape {tuple(arr.shape)}; expected ({num_classes}, 3)")
    return arr[:num_classes].clip(0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- loading


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    input_size: InputSize | None = None,
    batch_size: int = 4,
) -> Predictor:
    """Load a shipped model name, a run directory, a ``.pt`` checkpoint or an ``.onnx`` file.

    ``path``: ``"camvid-<model>"`` (shipped inside the package, see ``effseg models --pretrained``),
    a run folder (its final ``last.pt``, else ``best.pt``), a checkpoint or an effseg ONNX file.
    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (ONNX runs on the CPU).
    ``input_size``: optional size the network sees, a :class:`~effseg.size.Size` or
    ``"WIDTHxHEIGHT"`` text (a plain pair is effseg 0.1's ``(width, height)``; outputs keep the
    input size); default: a shipped model's registry size, an ONNX file's fixed size, else the
    image's own.
    """
    from effseg.deploy.artifact import load_artifact

    dev = resolve_device(device, what="device")
    size = _input_size(input_size)
    art = load_artifact(path, device=dev)
    meta = art.meta
    hw = Size(*meta["input_size"]) if meta.get("input_size") else None  # stored (H, W)
    fixed = hw if art.is_onnx else None
    if fixed and size and size != fixed:
        raise ModelError(f"{path}: the ONNX graph has a fixed input size {fixed}; got {size}")
    model = art.model
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if art.is_onnx:

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model(x.cpu()).to(dev)  # OnnxSegmentor: a logits tensor on the CPU

    return Predictor(
        forward,
        classes=meta["classes"],
        palette=meta.get("palette"),
        mean=meta["mean"],
        std=meta["std"],
        device=dev,
        input_size=size or hw,
        fixed_input_size=fixed,
        model=model,
        source=str(path),
        batch_size=batch_size,
    )
