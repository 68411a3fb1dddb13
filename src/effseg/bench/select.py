"""Pick a shipped model for a latency budget on this machine (``effseg select``).

Every shipped model (``effseg.zoo``) is timed briefly in every installed runtime at the input
size, the way ``effseg bench`` does (its runners and timing: warm-up calls, then a few timed
calls interleaved across runtimes, batch 1, model only, median). Timings are cached per
machine, model weights, runtime and size in the user cache (``$EFFSEG_CACHE``, default
``~/.cache/effseg``, under ``select/``; one JSON file each, written atomically), so a second
call answers at once.

The pick is the most accurate (model, runtime) pair within the budget, accuracy being the
model's **cross-drive** figure (``miou_crossdrive``: leave one drive out, mean of the folds).
Models without one rank after those with one, by their same-drive val figure, and the answer
says so. Within a model, the fastest runtime that fits. ``fp32`` runtimes by default: the
accuracy figures are fp32 ones (an int8 runtime given with ``runtimes`` is timed and marked).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from effseg.errors import BenchError

__all__ = ["Row", "cache_folder", "choose", "installed_runtimes", "select_models", "time_models"]

CACHE_ENV = "EFFSEG_CACHE"  # the user cache of effseg (the predict pipeline's exports live there too)
FP32_RUNTIMES = ("eager", "onnxruntime", "openvino")


@dataclass
class Row:
    """One (model, runtime) timing with the model's figures (mIoU in percent)."""

    model: str
    runtime: str
    median_ms: float | None
    fps: float | None
    miou_crossdrive: float | None
    miou_val: float | None
    role: str | None = None
    cached: bool = False
    error: str | None = None

    @property
    def int8(self) -> bool:
        return self.runtime.endswith("int8")


def cache_folder() -> Path:
    """``$EFFSEG_CACHE/select`` (default ``~/.cache/effseg/select``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "effseg") / "select"


def _module_installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def installed_runtimes() -> list[str]:
    """The fp32 runtimes available here: eager always; onnxruntime with onnx + onnxruntime (the
    ``deploy`` extra); openvino with OpenVINO too (the ``openvino`` extra)."""
    out = ["eager"]
    if _module_installed("onnx") and _module_installed("onnxruntime"):
        out.append("onnxruntime")
        if _module_installed("openvino"):
            out.append("openvino")
    return out


def machine_key() -> dict[str, Any]:
    """What a timing depends on: CPU model, usable cores, threads, and the runtimes' versions."""
    import torch

    from effseg.bench.sysinfo import cpu_cores, library_versions, machine_info

    versions = library_versions()
    return {
        "cpu": machine_info()["cpu_model"] or platform.machine(),
        "cores": cpu_cores(),
        "threads": torch.get_num_threads(),
        "torch": versions.get("torch"),
        "onnxruntime": versions.get("onnxruntime"),
        "openvino": _version("openvino"),
    }


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _cache_path(folder: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return folder / f"{key['model']}.{key['runtime']}.{key['size']}.{digest}.json"


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("median_ms") else None


def time_models(
    models: Sequence[Any],
    runtimes: Sequence[str],
    input_size: str,
    *,
    warmup: int = 2,
    runs: int = 5,
    refresh: bool = False,
    cache: Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> list[Row]:
    """Median latency (ms) of every shipped model (``effseg.zoo.ZooModel``) in every runtime at
    ``input_size`` (``WIDTHxHEIGHT``), from the cache unless ``refresh``."""
    cache = cache or cache_folder()
    machine = machine_key()
    rows: list[Row] = []
    for m in models:
        weights = _file_hash(m.path)
        keys = {
            rt: {"model": m.name, "weights": weights, "runtime": rt, "size": input_size, "machine": machine}
            for rt in runtimes
        }
        found = {rt: None if refresh else _read(_cache_path(cache, k)) for rt, k in keys.items()}
        missing = [rt for rt, v in found.items() if v is None]
        measured: dict[str, dict[str, Any]] = {}
        if missing:
            log(f"timing {m.name} at {input_size}: {', '.join(missing)} ({warmup} warm-up + {runs} runs)")
            measured = _time_runtimes(m.name, missing, input_size, warmup, runs)
        for rt in runtimes:
            row = Row(m.name, rt, None, None, m.miou_crossdrive, m.miou_val, m.role, cached=rt not in missing)
            if rt in missing:
                r = measured[rt]
                if r.get("error"):
                    row.error = r["error"]
                else:
                    row.median_ms, row.fps = float(r["latency_ms_median"]), float(r["fps"])
                    record = {**keys[rt], "median_ms": row.median_ms, "fps": row.fps, "runs": runs}
                    _write_atomic(_cache_path(cache, keys[rt]), record)
            else:
                cached = found[rt] or {}
                row.median_ms, row.fps = float(cached["median_ms"]), float(cached["fps"])
            rows.append(row)
    return rows


def _time_runtimes(
    name: str, runtimes: Sequence[str], input_size: str, warmup: int, runs: int
) -> dict[str, dict[str, Any]]:
    """Latency statistics (:func:`effseg.bench.timing.latency_stats`) of shipped model ``name`` per
    runtime, as ``effseg bench`` measures: the runners of :mod:`effseg.bench.runners` (ONNX files
    exported into a temporary folder), ``warmup`` calls each (at least one: the first compiles),
    then ``runs`` rounds of one timed call per runtime (interleaved). A runtime that fails gets
    ``{"error": ...}`` and the others go on."""
    import torch

    from effseg.bench.runners import onnx_runner, torch_runner
    from effseg.bench.timing import latency_stats, time_call
    from effseg.deploy.artifact import load_artifact
    from effseg.deploy.onnx_io import ONNX_RUNTIMES
    from effseg.errors import EffsegError
    from effseg.size import parse_size

    art = load_artifact(name, "cpu")
    h, w = parse_size(input_size, "--input-size")
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    meta = {k: v for k, v in art.meta.items() if k in ("classes", "palette", "mean", "std", "config")}
    out: dict[str, dict[str, Any]] = {}
    runners = []
    with tempfile.TemporaryDirectory(prefix="effseg-select-") as work:
        for rt in runtimes:
            try:
                if rt in ONNX_RUNTIMES:
                    threads = torch.get_num_threads()
                    runner = onnx_runner(art.model, None, x, rt, threads, Path(work), None, "all", meta)
                else:
                    runner = torch_runner(art.model, x, rt, torch.float32)
                for _ in range(max(1, warmup)):
                    runner.fn()
                runners.append(runner)
            except (
                EffsegError,
                ImportError,
                RuntimeError,
                ValueError,
                TypeError,
                NotImplementedError,
            ) as err:
                text = str(err).strip().splitlines()[0] if str(err).strip() else ""
                out[rt] = {"error": f"{type(err).__name__}: {text}"}
        for _ in range(runs):
            for runner in runners:
                runner.times_ms.append(time_call(runner.fn))
    for runner in runners:
        out[runner.runtime] = latency_stats(runner.times_ms)
    return out


def _accuracy(row: Row) -> tuple[int, float]:
    """Sort key: rows with a cross-drive figure first (by it), then by same-drive val."""
    if row.miou_crossdrive is not None:
        return 1, row.miou_crossdrive
    return 0, row.miou_val if row.miou_val is not None else -math.inf


def choose(rows: Sequence[Row], max_ms: float) -> tuple[Row | None, Row | None]:
    """``(the most accurate row within max_ms, the fastest row)``; within a model the fastest
    runtime that fits; ``None`` when nothing fits / nothing was timed."""
    timed = [r for r in rows if r.median_ms is not None]
    fastest = min(timed, key=lambda r: r.median_ms or math.inf) if timed else None
    fits = [r for r in timed if (r.median_ms or math.inf) <= max_ms]
    if not fits:
        return None, fastest
    best = max(fits, key=lambda r: (_accuracy(r), -(r.median_ms or 0.0)))
    return best, fastest


def budget_ms(max_ms: float | None, min_fps: float | None) -> float:
    """The latency budget in ms from ``--max-ms`` or ``--min-fps`` (one of them)."""
    if (max_ms is None) == (min_fps is None):
        raise BenchError("give one budget: --max-ms MS or --min-fps FPS")
    value = max_ms if max_ms is not None else min_fps
    if value is None or not (value > 0 and math.isfinite(value)):
        raise BenchError(f"budget {value}: expected a positive number")
    return float(max_ms) if max_ms is not None else 1000.0 / float(min_fps)  # type: ignore[arg-type]


def select_models(
    max_ms: float | None = None,
    min_fps: float | None = None,
    input_size: str = "480x360",
    runtimes: str | Sequence[str] | None = None,
    *,
    warmup: int = 2,
    runs: int = 5,
    refresh: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Time the shipped models (see :func:`time_models`) and choose within the budget.

    Returns ``{"budget_ms", "input_size", "runtimes", "machine", "rows", "pick", "fastest",
    "ranked_by"}`` (rows as dicts; ``pick`` None when nothing fits).
    """
    from effseg.bench.runners import parse_runtimes
    from effseg.size import format_size, parse_size
    from effseg.zoo import list_pretrained

    budget = budget_ms(max_ms, min_fps)
    size = format_size(parse_size(input_size, "--input-size"))
    rts = parse_runtimes(runtimes) if runtimes else installed_runtimes()
    if warmup < 0 or runs < 1:
        raise BenchError(f"--warmup {warmup} / --runs {runs}: expected warmup >= 0 and runs >= 1")
    models = list_pretrained()
    if not models:
        raise BenchError("no shipped model to choose from (effseg models --pretrained lists none)")
    rows = time_models(models, rts, size, warmup=warmup, runs=runs, refresh=refresh, log=log)
    pick, fastest = choose(rows, budget)
    ranked = "cross-drive mIoU" if pick is None or pick.miou_crossdrive is not None else "same-drive val mIoU"
    return {
        "budget_ms": budget,
        "input_size": size,
        "runtimes": rts,
        "machine": machine_key(),
        "rows": [asdict(r) for r in rows],
        "pick": asdict(pick) if pick else None,
        "fastest": asdict(fastest) if fastest else None,
        "ranked_by": ranked,
    }
