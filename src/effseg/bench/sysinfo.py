"""Describe the machine a measurement ran on, and its theoretical peak fp32 FLOP/s.

Every benchmark result carries :func:`machine_info` so a number is never separated
from the CPU / GPU, thread count and library versions that produced it.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx_vnni")


def _read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """First processor block of ``/proc/cpuinfo`` as ``{key: value}`` (empty off Linux)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that decide speed: python, torch, onnx, onnxruntime, ..."""
    names = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "torchao", "effseg")
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    versions.update({name: _version(name) for name in names})
    return versions


def cpu_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU model, cores, clock (MHz), SIMD flags, threads, GPU name and library versions."""
    cpu = _read_cpuinfo()
    flags = set(cpu.get("flags", "").split())
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_model": cpu.get("model name") or platform.processor() or "unknown",
        "cpu_vendor": cpu.get("vendor_id"),
        "cpu_family": int(cpu["cpu family"]) if cpu.get("cpu family", "").isdigit() else None,
        "cpu_model_number": int(cpu["model"]) if cpu.get("model", "").isdigit() else None,
        "cpu_mhz": float(cpu["cpu MHz"]) if "cpu MHz" in cpu else None,
        "cores": cpu_cores(),
        "simd_flags": sorted(f for f in _FLAGS_OF_INTEREST if f in flags),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # Other processes competing for the cores make latencies noisy: recorded with every result.
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": library_versions(),
        # OpenMP settings change eager latency a lot on a busy machine (spin-waiting threads).
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
    }
    return info


def peak_fp32_flops(info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Theoretical peak fp32 FLOP/s of the CPU cores this process may use.

    peak = cores x FMA units x fp32 lanes per unit x 2 (an FMA is a multiply and an
    add) x clock.  The FMA datapath width comes from the micro-architecture, not
    just the flags: AMD Zen 2/3/4 (families 0x17/0x19) have two 256-bit FMA pipes
    and execute an AVX-512 FMA as two 256-bit halves, so 8 fp32 lanes per unit
    even when ``avx512f`` is listed; Zen 5 (0x1A) has full 512-bit pipes.  Other
    CPUs: two FMA units of the widest vector in the flags.  The clock is the one
    ``/proc/cpuinfo`` reports (in a VM the nominal clock; a boost clock would make
    the peak higher).  Returns the figure (GFLOP/s) and the formula used.
    """
    info = info or machine_info()
    flags = set(info.get("simd_flags", []))
    vendor = info.get("cpu_vendor") or ""
    family = info.get("cpu_family")
    fma_units = 2
    if "AMD" in vendor and family in (0x17, 0x19):
        lanes, why = 8, "AMD Zen 2/3/4: two 256-bit FMA pipes (AVX-512 is double-pumped)"
    elif "avx512f" in flags:
        lanes, why = 16, "AVX-512: 16 fp32 lanes per FMA unit"
    elif "fma" in flags or "avx2" in flags:
        lanes, why = 8, "AVX2/FMA: 8 fp32 lanes per FMA unit"
    else:
        lanes, why = 4, "SSE: 4 fp32 lanes, assumed 2 units"
    cores = int(info.get("cores") or 1)
    ghz = float(info.get("cpu_mhz") or 0.0) / 1000.0
    gflops = cores * fma_units * lanes * 2 * ghz
    formula = f"{cores} cores x {fma_units} FMA units x {lanes} fp32 lanes x 2 FLOP/FMA x {ghz:.3f} GHz"
    return {
        "peak_gflops": gflops,
        "formula": formula,
        "reason": why,
        "cores": cores,
        "fma_units": fma_units,
        "lanes": lanes,
        "clock_ghz": ghz,
    }


def measured_gemm_gflops(n: int = 2048, runs: int = 5) -> float:
    """Best fp32 GFLOP/s of an ``n x n`` matmul in torch (an achievable-peak sanity check)."""
    import time

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def describe(info: dict[str, Any]) -> str:
    """One-line machine summary for tables and plots."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    mhz = f" @ {info['cpu_mhz']:.0f} MHz" if info.get("cpu_mhz") else ""
    cpu = re.sub(r"\s+", " ", str(info.get("cpu_model")))
    load = f", load avg {info['load_avg_1m']:.1f}" if info.get("load_avg_1m") is not None else ""
    return (
        f"{cpu}{mhz}, {info.get('cores')} cores, {info.get('torch_threads')} torch threads, "
        f"{info.get('torch_cpu_capability')}{gpu}{load}; torch {info['versions'].get('torch')}, "
        f"onnxruntime {info['versions'].get('onnxruntime')}"
    )
