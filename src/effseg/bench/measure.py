"""Measure models the same way: parameters, GFLOPs, latency, memory, mIoU per runtime.

Conventions (written into every result):

- FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on the eval-mode
  model (the inference path: no auxiliary head), which counts one multiply-add
  as 2 FLOPs; GFLOPs = FLOPs / 1e9.  Pooling, interpolation and elementwise ops
  are not counted.
- Latency: eval mode, ``torch.inference_mode``, ``warmup`` untimed calls, then
  ``runs`` timed calls; median and p90 in ms (linear-interpolated percentiles,
  ``numpy.percentile``), FPS = batch * 1000 / median.  The runtimes of one model
  are timed *interleaved* (one call of each in turn, repeated), so a slow spell
  on a shared machine hits all of them alike and their ratios stay honest.
  CUDA timings call ``torch.cuda.synchronize`` before reading the clock.
- Peak memory: CUDA ``torch.cuda.max_memory_allocated`` during one call; CPU the
  growth of the process's peak resident set (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs``) during one call over the resident set before it.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effseg.bench.models_table import count_flops, count_params
from effseg.bench.runners import (
    DTYPES,
    RUNTIMES,
    Runner,
    onnx_runner,
    parse_runtimes,
    torch_runner,
)
from effseg.bench.sysinfo import machine_info, peak_fp32_flops
from effseg.bench.timing import latency_stats, peak_memory_mb, sync_for, time_call, time_callable
from effseg.data.from_config import stored_val_split, trained_on_note
from effseg.deploy.artifact import load_artifact
from effseg.deploy.onnx_io import ONNX_RUNTIMES
from effseg.errors import BenchError, EffsegError
from effseg.size import parse_size

MEMORY_METHOD = {
    False: "CPU: peak RSS during one call (Linux VmHWM after clear_refs) minus RSS before it",
    True: "CUDA: torch.cuda.max_memory_allocated during one call minus memory allocated before",
}
FLOPS_CONVENTION = "torch.utils.flop_counter: 1 multiply-add = 2 FLOPs; GFLOPs = FLOPs / 1e9"


# ----------------------------------------------------------------------------- models


@dataclass
class BenchModel:
    """A model to benchmark: an eval-mode nn.Module (or an ONNX file) and its metadata."""

    name: str
    model: nn.Module | None
    meta: dict[str, Any] = field(default_factory=dict)
    onnx_path: str | None = None


def resolve_model(spec: str, num_classes: int = 19, device: str = "cpu") -> BenchModel:
    """A CLI model argument -> :class:`BenchModel`, through the one artifact loader.

    ``spec``: a shipped model name, run folder, checkpoint, ``.onnx`` file (run by onnxruntime;
    effseg metadata optional here), config YAML or a name like ``pspnet_resnet18`` (random
    weights, ``num_classes`` classes; ``_os16`` suffix for output stride 16).
    """
    art = load_artifact(spec, device, allow_untrained=True, num_classes=num_classes, require_metadata=False)
    meta = dict(art.meta)
    meta.setdefault("source", str(art.path) if art.path else "random weights")
    if art.is_onnx:
        return BenchModel(art.name, None, meta, onnx_path=str(art.path))
    return BenchModel(art.name, art.model, meta)


def miou_from_run(path: str | Path) -> float | None:
    """mIoU (percent) from ``effseg eval`` output: a run folder (``eval/eval.json``), its ``eval``
    folder, or the JSON file itself.  ``None`` when there is none."""
    path = Path(path)
    candidates = [path] if path.is_file() else [path / "eval" / "eval.json", path / "eval.json"]
    for c in candidates:
        if c.is_file():
            try:
                data = json.loads(c.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise BenchError(f"--eval {c}: not a readable eval JSON ({err})") from None
            value = data.get("miou", data.get("mIoU"))
            if value is None:
                raise BenchError(f"--eval {c}: no 'miou' key")
            value = float(value)
            return value * 100 if value <= 1.0 else value
    if not path.exists():
        raise BenchError(f"--eval {path}: no such run folder or eval JSON")
    return None


# ----------------------------------------------------------------------------- stage timing


def stage_breakdown(
    model: nn.Module, x: torch.Tensor, warmup: int = 1, runs: int = 3, sync: Callable[[], None] | None = None
) -> dict[str, float]:
    """Median ms of the backbone, the head and the final upsample of an eval-mode Segmentor."""
    if not (hasattr(model, "backbone") and hasattr(model, "head")):
        return {}
    size = x.shape[-2:]
    with torch.inference_mode():
        feats = model.backbone(x)
        logits = model.head(feats)["out"]  # a head returns named logits at feature resolution
        steps = {
            "backbone": lambda: model.backbone(x),
            "head": lambda: model.head(feats),
            "upsample": lambda: F.interpolate(logits, size=size, mode="bilinear", align_corners=False),
        }
        return {f"{k}_ms": float(np.median(time_callable(fn, warmup, runs, sync))) for k, fn in steps.items()}


# ----------------------------------------------------------------------------- main entry


def bench_models(
    specs: Sequence[str],
    input_size: str | tuple[int, int] = "1024x512",
    batch: int = 1,
    device: str = "cpu",
    threads: int | None = None,
    dtype: str = "fp32",
    runtimes: str | Sequence[str] = "eager",
    warmup: int = 3,
    runs: int = 10,
    eval_run: str | None = None,
    calib: Sequence[np.ndarray] | None = None,
    stages: bool = True,
    ort_opt_level: str = "all",
    num_classes: int = 19,
    work_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark every model in ``specs`` under every runtime; returns the JSON-able report.

    ``input_size`` is ``"WxH"`` or ``(H, W)``.  Result rows hold params (M), GFLOPs,
    latency median/p90 (ms), FPS, peak memory (MB), achieved GFLOP/s, latency
    relative to eager, per-stage ms (eager), and mIoU / mIoU per 10 ms when known.
    A runtime that fails for one model is recorded with its error and the rest go on.
    """
    size = parse_size(input_size, "--input-size")
    rts = parse_runtimes(runtimes)
    if dtype not in DTYPES:
        raise BenchError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if batch < 1 or runs < 1 or warmup < 0:
        raise BenchError(
            f"--batch {batch} / --runs {runs} / --warmup {warmup}: expected batch, runs >= 1, warmup >= 0"
        )
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available here")
    if dev.type == "cuda" and any(r in ONNX_RUNTIMES for r in rts):
        raise BenchError(
            "--runtime onnxruntime* / openvino*: effseg runs ONNX files on the CPU only; use --device cpu"
        )
    if dtype != "fp32" and any(r in ONNX_RUNTIMES for r in rts):
        raise BenchError(
            f"--dtype {dtype}: the onnxruntime and openvino runtimes take fp32 input; use --dtype fp32"
        )
    if threads:
        torch.set_num_threads(int(threads))
    threads = torch.get_num_threads()
    miou_eval = miou_from_run(eval_run) if eval_run else None
    sync = sync_for(dev)
    machine = machine_info()
    peak = peak_fp32_flops(machine)
    settings = {
        "input_size": list(size),
        "batch": batch,
        "device": str(dev),
        "threads": threads,
        "dtype": dtype,
        "runtimes": rts,
        "warmup": warmup,
        "runs": runs,
        "ort_opt_level": ort_opt_level,
        "timing": "interleaved across runtimes, median of runs",
        "eval": eval_run,
    }
    results: list[dict[str, Any]] = []
    models = [resolve_model(s, num_classes=num_classes, device=str(dev)) for s in specs]
    from effseg.progress import progress_bar

    bar = progress_bar(transient=True, disable=not progress)
    tmp = tempfile.TemporaryDirectory() if work_dir is None else None
    work_root = Path(work_dir) if work_dir else Path(tmp.name)  # type: ignore[union-attr]
    try:
        with bar:
            task = bar.add_task("bench", total=len(models) * (len(rts) * (warmup + runs + 1)))
            for bm in models:
                results.extend(
                    _bench_one(
                        bm,
                        size,
                        batch,
                        dev,
                        dtype,
                        rts,
                        warmup,
                        runs,
                        sync,
                        calib,
                        stages,
                        ort_opt_level,
                        threads,
                        work_root / _safe(bm.name),
                        miou_eval,
                        peak["peak_gflops"],
                        bar,
                        task,
                    )
                )
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {
        "machine": machine,
        "peak_fp32": peak,
        "flops_convention": FLOPS_CONVENTION,
        "memory_method": MEMORY_METHOD[dev.type == "cuda"],
        "settings": settings,
        "results": results,
    }


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _bench_one(
    bm: BenchModel,
    size: tuple[int, int],
    batch: int,
    dev: torch.device,
    dtype: str,
    rts: list[str],
    warmup: int,
    runs: int,
    sync: Callable[[], None] | None,
    calib: Sequence[np.ndarray] | None,
    stages: bool,
    ort_opt_level: str,
    threads: int,
    work: Path,
    miou_eval: float | None,
    peak_gflops: float,
    bar: Any,
    task: Any,
) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(dev)
    base: dict[str, Any] = {
        "model": bm.name,
        "source": bm.meta.get("source", bm.meta.get("path")),
        "input_size": list(size),
        "batch": batch,
        "device": str(dev),
        "dtype": dtype,
        "threads": threads,
    }
    if bm.model is not None:
        base.update(count_params(bm.model))
        base.update(count_flops(bm.model, x[:1]))
        base["gflops"] *= batch
        base["model_config"] = getattr(bm.model, "config", None)
    miou_fp32 = miou_eval
    zoo_miou = (bm.meta.get("zoo") or {}).get("miou_val")
    if miou_fp32 is None and zoo_miou is not None:  # a shipped model: its `effseg eval` figure
        miou_fp32 = float(zoo_miou)
    config = bm.meta.get("config") if isinstance(bm.meta.get("config"), dict) else {}
    seen = trained_on_note(config, stored_val_split(config))
    if miou_fp32 is None and bm.meta.get("best_miou") is not None and not seen:
        # a run: its best validation (not when it validated on frames it trained on)
        v = float(bm.meta["best_miou"])
        miou_fp32 = v * 100 if v <= 1 else v
    runners: list[Runner] = []
    rows: dict[str, dict[str, Any]] = {}
    for rt in rts:
        row = {**base, "runtime": rt}
        rows[rt] = row
        try:
            if bm.model is None and rt not in ONNX_RUNTIMES:
                raise BenchError(
                    f"{bm.onnx_path}: an ONNX file runs only under the onnxruntime and openvino runtimes"
                )
            if rt in ONNX_RUNTIMES:
                runner = onnx_runner(
                    bm.model,
                    bm.onnx_path,
                    x,
                    rt,
                    threads,
                    work,
                    calib,
                    ort_opt_level,
                    {
                        k: v
                        for k, v in bm.meta.items()
                        if k in ("classes", "palette", "mean", "std", "config")
                    },
                )
            else:
                runner = torch_runner(bm.model, x, rt, DTYPES[dtype], calib)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            for _ in range(max(1, warmup)):  # the first call compiles / allocates
                runner.fn()
                bar.advance(task)
            row["warmup_seconds"] = round(time.perf_counter() - t0, 2)
            row["peak_mem_mb"], row["memory_method"] = peak_memory_mb(runner.fn, dev)
            row.update(runner.info)
            runners.append(runner)
        except (EffsegError, RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as err:
            # one failing runtime (e.g. torch.compile on an unsupported op) must not lose the others
            row["error"] = (
                f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            )
            bar.advance(task, warmup + runs + 1)
    bar.update(task, description=f"bench {bm.name}")
    for _ in range(runs):  # interleaved: one call of each runtime per round
        for runner in runners:
            cpu0 = time.process_time()  # CPU time of all this process's threads (torch, onnxruntime)
            runner.times_ms.append(time_call(runner.fn, sync))
            runner.cpu_ms.append((time.process_time() - cpu0) * 1000.0)
            bar.advance(task)
    for runner in runners:
        rows[runner.runtime].update(latency_stats(runner.times_ms, batch))
        rows[runner.runtime]["times_ms"] = [round(t, 3) for t in runner.times_ms]
        rows[runner.runtime]["cpu_ms_median"] = float(np.median(runner.cpu_ms))
    eager = rows.get("eager", {}).get("latency_ms_median")
    for rt, row in rows.items():
        med = row.get("latency_ms_median")
        if med is None:
            continue
        row["vs_eager"] = med / eager if eager else None
        if row.get("gflops"):
            row["achieved_gflops_per_s"] = row["gflops"] / (med / 1000.0)
            row["fraction_of_peak"] = row["achieved_gflops_per_s"] / peak_gflops if peak_gflops else None
            # Load-corrected rate: FLOPs per second of CPU time actually received, times the threads.
            # On a machine shared with other jobs, wall time includes waiting for a core; CPU time
            # does not (it does include spin-waiting, so this stays a conservative estimate).
            cpu = row.get("cpu_ms_median")
            if cpu and dev.type == "cpu":
                row["cpu_time_gflops_per_s"] = row["gflops"] / (cpu / 1000.0) * threads
                row["cpu_time_fraction_of_peak"] = (
                    row["cpu_time_gflops_per_s"] / peak_gflops if peak_gflops else None
                )
        # an int8 or OpenVINO (bf16) row shows only its own measured mIoU (`effseg eval --runtime ...`)
        miou = miou_fp32 if not (rt.endswith("int8") or rt.startswith("openvino")) else None
        if rt == "onnxruntime-int8":
            miou = _int8_miou(row, bm)
        if miou is not None:
            row["miou"] = miou
            row["miou_per_10ms"] = miou / (med / 10.0)
    if (
        stages
        and dtype == "fp32"
        and "eager" in rows
        and bm.model is not None
        and "error" not in rows["eager"]
    ):
        rows["eager"]["stages"] = stage_breakdown(bm.model, x, warmup=1, runs=max(1, min(runs, 5)), sync=sync)
    return list(rows.values())


def _int8_miou(row: dict[str, Any], bm: BenchModel) -> float | None:
    q = bm.meta.get("quantization") or {}
    v = q.get("miou_int8")
    return float(v) if v is not None else None


__all__ = [
    "DTYPES",
    "RUNTIMES",
    "BenchModel",
    "bench_models",
    "miou_from_run",
    "parse_runtimes",
    "resolve_model",
    "stage_breakdown",
]
