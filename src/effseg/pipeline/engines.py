"""Runtimes for the predict pipeline: eager, torch.compile, onnxruntime, OpenVINO (fp32 / int8), auto.

An :class:`Engine` turns one ``(H, W, 3)`` uint8 RGB frame into ``(H, W)`` uint8 class ids.
Preprocessing is the :class:`~effseg.api.Predictor`'s, op for op, so that the eager engine gives
exactly ``Predictor.predict``'s answer. Exported files live in an
:class:`~effseg.pipeline.export_cache.ExportCache` (next to the run, or in the user cache).

``auto`` exports once, times each candidate briefly on a sample frame at the frame size and keeps
the fastest; a graph that is not exact fp32 (int8, and OpenVINO, which runs bf16 on CPUs with AMX)
is a candidate only when its argmax agreement with onnxruntime fp32 on the sample frames is
>= 98% (recorded in ``choice.json``). OpenVINO is a candidate when the ``openvino`` extra is
installed. ``torch.compile`` is not an ``auto`` candidate: its compilation (tens of seconds per
input size) is not cached across processes.
"""

from __future__ import annotations

import copy
import platform
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from effseg.deploy.onnx_io import ONNX_RUNTIMES, split_runtime
from effseg.errors import EffsegError, ModelError
from effseg.models.contract import eval_logits
from effseg.pipeline import export_cache
from effseg.pipeline.export_cache import ExportCache, cache_root
from effseg.pipeline.postprocess import reference_argmax, upsample_argmax
from effseg.size import Size

RUNTIMES = ("auto", "eager", "compile", "compile-int8", *ONNX_RUNTIMES)
MIN_INT8_AGREEMENT = 0.98
MAX_SESSIONS = 4  # onnxruntime / OpenVINO sessions an OnnxEngine keeps (one per network size)
POSTPROCESS = ("graph", "lowres")  # onnxruntime: ArgMax in the graph, or low-res logits + exact refine


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None (the optional ``openvino`` extra)."""
    try:
        import openvino

        return str(openvino.__version__)
    except ImportError:
        return None


def machine_key() -> dict[str, Any]:
    """What a timing depends on: CPU model, threads, onnxruntime, OpenVINO and torch versions."""
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "openvino": openvino_version(),
    }


class Engine:
    """Frame -> class ids. ``model_seconds`` sums the time spent from the normalised tensor to the
    ids (network, upsample, argmax); ``frames`` counts calls."""

    name = "engine"

    def __init__(self, predictor: Any, input_size: Size | None = None) -> None:
        self.predictor = predictor
        self.input_size = input_size  # the size the network sees; None: the frame's own size
        self.model_seconds = 0.0
        self.frames = 0

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 -> ``(1, 3, h, w)`` float32, exactly as ``Predictor._logits`` does."""
        p = self.predictor
        x = torch.from_numpy(image[None].copy()).permute(0, 3, 1, 2).float().div_(255.0)
        if self.input_size is not None and x.shape[-2:] != self.input_size:
            size = (self.input_size.h, self.input_size.w)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - p.mean) / p.std

    def infer(self, x: torch.Tensor, out_size: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = self.prepare(image)
            t0 = time.perf_counter()
            labels = self.infer(x, image.shape[:2])
        self.model_seconds += time.perf_counter() - t0
        self.frames += 1
        return labels


class TorchEngine(Engine):
    """Eager PyTorch, ``torch.compile``, or PT2E int8 + inductor (``compile-int8``, calibrated on
    ``samples``, the first frames): logits at the network size -> bilinear upsample to the frame
    and argmax (:func:`~effseg.pipeline.postprocess.reference_argmax`)."""

    def __init__(
        self,
        predictor: Any,
        input_size: Size | None = None,
        runtime: str = "eager",
        samples: Sequence[np.ndarray] = (),
    ) -> None:
        super().__init__(predictor, input_size)
        self.name = runtime
        if runtime == "compile-int8":
            from effseg.deploy.pt2e import compile_int8

            if not samples:
                raise ModelError("--runtime compile-int8 needs a readable input frame to calibrate on")
            self.module = compile_int8(predictor.model, [self.prepare(s) for s in samples])
        else:
            self.module = torch.compile(predictor.model) if runtime == "compile" else predictor.model

    def infer(self, x: torch.Tensor, out_size: tuple[int, int]) -> np.ndarray:
        logits = eval_logits(self.module(x.to(self.predictor.device)))
        return reference_argmax(logits.cpu(), tuple(out_size))  # full upsample: faster here (benchmarks.md)


class PredictorEngine(Engine):
    """Any Predictor (e.g. an ``.onnx`` file given as MODEL), through ``predict_arrays``."""

    def __init__(self, predictor: Any, input_size: Size | None = None, name: str = "onnxruntime"):
        super().__init__(predictor, input_size)
        self.name = name

    def __call__(self, image: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        labels = self.predictor.predict_arrays([image], input_size=self.input_size, batch_size=1)[0]
        self.model_seconds += time.perf_counter() - t0
        self.frames += 1
        return labels.astype(np.uint8)


class OnnxEngine(Engine):
    """A cached export (``precision`` fp32 or int8) run by ``backend`` (onnxruntime or openvino);
    ``postprocess`` ``graph`` (ArgMax in the graph when the network runs at the frame size) or
    ``lowres`` (final upsample cut, exact refine outside)."""

    def __init__(
        self,
        predictor: Any,
        cache: ExportCache,
        precision: str = "fp32",
        postprocess: str = "graph",
        input_size: Size | None = None,
        samples: Sequence[np.ndarray] = (),
        backend: str = "onnxruntime",
    ) -> None:
        super().__init__(predictor, input_size)
        self.cache, self.precision, self.postprocess = cache, precision, postprocess
        self.samples = list(samples)
        self.backend = backend
        self.name = backend + ("-int8" if precision == "int8" else "") + f" ({postprocess})"
        self._sessions: OrderedDict[tuple[Any, bool], tuple[Any, str, str]] = OrderedDict()

    def _session(self, net: tuple[int, int], out: tuple[int, int]) -> tuple[Any, str, str]:
        key = (net, out == net)
        if key in self._sessions:
            self._sessions.move_to_end(key)  # an LRU of MAX_SESSIONS sizes: memory stays bounded
        else:
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.popitem(last=False)
            _, onnx_session, _ = export_cache.deploy_functions()
            base = self.cache.onnx(net, self.precision, [self.prepare(s) for s in self.samples])
            kind = "labels" if self.postprocess == "graph" and out == net else self.postprocess
            path = self.cache.derived(base, kind) if kind != "graph" else base
            if path is None:  # no final Resize to cut: logits at full size
                path, kind = base, "logits"
            session = onnx_session(path, self.backend)
            self._sessions[key] = (session, session.get_inputs()[0].name, kind)
        return self._sessions[key]

    def infer(self, x: torch.Tensor, out_size: tuple[int, int]) -> np.ndarray:
        net = (int(x.shape[-2]), int(x.shape[-1]))
        session, name, kind = self._session(net, tuple(out_size))
        result = session.run(None, {name: np.ascontiguousarray(x.numpy())})[0]
        if kind == "labels":
            return result[0]
        return upsample_argmax(torch.from_numpy(result), tuple(out_size))


def _time_engine(engine: Engine, image: np.ndarray, runs: int = 5, warmup: int = 2) -> float:
    """Median model time (ms) of ``engine`` on ``image`` over ``runs`` calls after ``warmup``."""
    for _ in range(warmup):
        engine(image)
    before = engine.model_seconds
    times = []
    for _ in range(runs):
        start = engine.model_seconds
        engine(image)
        times.append(engine.model_seconds - start)
    engine.model_seconds = before
    return float(np.median(times) * 1000.0)


def is_onnx_predictor(predictor: Any) -> bool:
    """True when the Predictor runs an ONNX file (no PyTorch module to export)."""
    return (
        not isinstance(predictor.model, torch.nn.Module)
        or getattr(predictor.model, "session", None) is not None
    )


def build_engine(
    predictor: Any,
    runtime: str,
    model_spec: str | Path,
    samples: Sequence[np.ndarray],
    input_size: Size | None = None,
    log: Callable[[str], None] | None = None,
) -> Engine:
    """The :class:`Engine` for ``runtime`` (one of :data:`RUNTIMES`); ``samples`` are the first
    frames of the input (``auto``'s timing frame, int8 calibration and agreement)."""
    if runtime not in RUNTIMES:
        raise ModelError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if is_onnx_predictor(predictor):
        return _onnx_file_engine(predictor, runtime, model_spec, input_size)
    if runtime in ("eager", "compile", "compile-int8"):
        return TorchEngine(predictor, input_size, runtime, samples)
    meta = {
        "classes": list(predictor.classes),
        "palette": np.asarray(predictor.palette).tolist(),
        "mean": predictor.mean.flatten().tolist(),
        "std": predictor.std.flatten().tolist(),
    }
    cache = ExportCache(cache_root(model_spec), predictor.model, meta)
    if runtime != "auto":
        return _make(predictor, cache, runtime, "graph", input_size, samples)
    return _auto(predictor, cache, samples, input_size, log or (lambda _m: None))


def _onnx_file_engine(
    predictor: Any, runtime: str, model_spec: str | Path, input_size: Size | None
) -> Engine:
    """An ``.onnx`` MODEL runs as it is: in onnxruntime (``auto`` too), or compiled by OpenVINO."""
    if runtime not in ("auto", "onnxruntime", "openvino"):
        raise ModelError(
            f"{model_spec}: an ONNX file runs as it is, with --runtime onnxruntime or openvino, not {runtime}"
        )
    if runtime == "openvino":
        from effseg.deploy.runtime import OnnxSegmentor

        onnx_model = predictor.model
        predictor = copy.copy(predictor)  # the caller's Predictor keeps its onnxruntime session
        predictor.model = OnnxSegmentor(onnx_model.path, onnx_model.meta, backend="openvino")
    return PredictorEngine(predictor, input_size, name="openvino" if runtime == "openvino" else "onnxruntime")


def _auto(
    predictor: Any,
    cache: ExportCache,
    samples: Sequence[np.ndarray],
    input_size: Size | None,
    log: Callable[[str], None],
) -> Engine:
    if not samples:
        raise ModelError("--runtime auto needs at least one readable input frame to measure on")
    image = samples[0]
    net = (input_size.h, input_size.w) if input_size else tuple(image.shape[:2])
    machine = machine_key()
    done = cache.read(net)
    if done.get("runtime") and done.get("machine") == machine:
        return _make(predictor, cache, done["runtime"], done.get("postprocess", "graph"), input_size, samples)
    runtimes = ["eager"]
    try:
        cache.onnx(net, "fp32")
        runtimes.append("onnxruntime")
    except (EffsegError, ImportError) as err:
        log(f"auto: no ONNX export ({_first_line(err)}); measuring eager only")
    if len(runtimes) > 1:
        runtimes += _approximate_candidates(predictor, cache, net, samples, input_size, log)
    timings: dict[str, float] = {}
    for runtime in runtimes:
        for post in ("graph",) if runtime == "eager" else POSTPROCESS:
            engine = _make(predictor, cache, runtime, post, input_size, samples)
            timings[f"{runtime} ({post})" if runtime != "eager" else runtime] = round(
                _time_engine(engine, image), 3
            )
    best = min(timings, key=timings.get)  # type: ignore[arg-type]
    runtime, _, post = best.partition(" (")
    record = cache.record(
        net, runtime=runtime, postprocess=post.rstrip(")") or "graph", timings_ms=timings, machine=machine
    )
    log("auto: " + ", ".join(f"{k} {v:.1f} ms" for k, v in timings.items()) + f" -> {best}")
    return _make(predictor, cache, record["runtime"], record["postprocess"], input_size, samples)


def _approximate_candidates(
    predictor: Any,
    cache: ExportCache,
    net: tuple[int, int],
    samples: Sequence[np.ndarray],
    input_size: Size | None,
    log: Callable[[str], None],
) -> list[str]:
    """The runtimes whose graphs are not exact fp32 (int8; OpenVINO, bf16 on CPUs with AMX) and
    agree with onnxruntime fp32 on >= :data:`MIN_INT8_AGREEMENT` of the sample frames' pixels
    (each agreement is recorded in ``choice.json``)."""
    prepared = [TorchEngine(predictor, input_size).prepare(s) for s in samples]
    files: dict[str, Path] = {"fp32": cache.onnx(net, "fp32")}
    try:
        files["int8"] = cache.onnx(net, "int8", prepared)
    except Exception as err:  # noqa: BLE001 - onnxruntime's quantizer raises many types; int8 is optional
        log(f"auto: int8 quantization failed ({type(err).__name__}: {_first_line(err)}); int8 not used")
    have_openvino = openvino_version() is not None
    chosen = []
    for runtime in ("onnxruntime-int8", "openvino", "openvino-int8"):
        backend, precision = split_runtime(runtime)
        if (backend == "openvino" and not have_openvino) or precision not in files:
            continue
        key = "int8_agreement" if runtime == "onnxruntime-int8" else f"{runtime}_agreement"
        agreement = cache.read(net).get(key)
        if agreement is None:
            try:
                checks = prepared[1::2] or prepared
                agreement = cache.agreement(files["fp32"], files[precision], checks, backend)
            except EffsegError as err:
                log(f"auto: {runtime} not used ({_first_line(err)})")
                continue
            cache.record(net, **{key: agreement})
        if float(agreement) >= MIN_INT8_AGREEMENT:
            chosen.append(runtime)
        else:
            log(f"{runtime} argmax agreement with fp32 {agreement:.2%} < {MIN_INT8_AGREEMENT:.0%}: not used")
    return chosen


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _make(
    predictor: Any,
    cache: ExportCache,
    runtime: str,
    postprocess: str,
    input_size: Size | None,
    samples: Sequence[np.ndarray],
) -> Engine:
    if runtime == "eager":
        return TorchEngine(predictor, input_size)
    backend, precision = split_runtime(runtime)
    return OnnxEngine(predictor, cache, precision, postprocess, input_size, samples, backend)
