"""Timing and memory measurement, the same way everywhere in effseg.

- Latency: ``warmup`` untimed calls, then ``runs`` timed calls; median and p90 in ms
  (linear-interpolated percentiles, ``numpy.percentile``), FPS = batch * 1000 / median.
  CUDA timings call ``torch.cuda.synchronize`` before reading the clock.
- Peak memory: CUDA ``torch.cuda.max_memory_allocated`` during one call; CPU the growth of the
  process's peak resident set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``)
  during one call over the resident set before it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effseg.errors import BenchError

# ----------------------------------------------------------------------------- statistics


def latency_stats(times_ms: Sequence[float], batch: int = 1) -> dict[str, float]:
    """Median, p90, mean, min, max (ms) and FPS of per-call latencies ``times_ms``."""
    if not len(times_ms):
        raise BenchError("no timings to summarise (runs must be >= 1)")
    arr = np.asarray(times_ms, dtype=np.float64)
    median = float(np.percentile(arr, 50))
    return {
        "latency_ms_median": median,
        "latency_ms_p90": float(np.percentile(arr, 90)),
        "latency_ms_mean": float(arr.mean()),
        "latency_ms_min": float(arr.min()),
        "latency_ms_max": float(arr.max()),
        "fps": batch * 1000.0 / median if median > 0 else math.inf,
        "runs": len(arr),
    }


def sync_for(device: torch.device | str) -> Callable[[], None] | None:
    """The synchronisation call timings on ``device`` need (``torch.cuda.synchronize`` on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


def time_call(
    fn: Callable[[], Any],
    sync: Callable[[], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> float:
    """Wall time of one call of ``fn`` in ms; ``sync`` is called before both clock reads."""
    if sync is not None:
        sync()
    t0 = timer()
    fn()
    if sync is not None:
        sync()
    return (timer() - t0) * 1000.0


def time_callable(
    fn: Callable[[], Any],
    warmup: int = 3,
    runs: int = 10,
    sync: Callable[[], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """``warmup`` untimed calls, then ``runs`` timed ones: the list of latencies in ms."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    return [time_call(fn, sync, timer) for _ in range(runs)]


# ----------------------------------------------------------------------------- memory


def _vm_kb(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field_name}:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def peak_memory_mb(fn: Callable[[], Any], device: torch.device | str) -> tuple[float | None, str]:
    """Peak memory of one call of ``fn`` in MB and the method used to measure it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (
            torch.cuda.max_memory_allocated(device) - base
        ) / 2**20, "cuda max_memory_allocated - allocated before"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (after - before) / 1024, "growth of ru_maxrss (lower bound: the process peak may predate)"
    rss = _vm_kb("VmRSS")
    fn()
    hwm = _vm_kb("VmHWM")
    if rss is None or hwm is None:
        return None, "unavailable"
    return max(0, hwm - rss) / 1024, "CPU peak RSS (VmHWM after clear_refs) - RSS before the call"


__all__ = ["latency_stats", "peak_memory_mb", "sync_for", "time_call", "time_callable"]
