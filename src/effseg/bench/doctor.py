"""``effseg doctor``: what this installation can run, on this CPU, and what is missing for what.

Everything is read from the machine, never assumed: package versions from their installed
metadata, onnxruntime's execution providers and OpenVINO's CPU capabilities from the libraries
themselves, the CPU's instruction sets from ``/proc/cpuinfo`` (the kernel's flags) and the SIMD
level PyTorch dispatches to from ``torch.backends.cpu.get_cpu_capability()``.

>>> report = doctor_report()
>>> print(format_report(report))
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from effseg.bench.sysinfo import _read_cpuinfo, cpu_cores

__all__ = [
    "CPU_FEATURES",
    "PACKAGES",
    "Package",
    "cpu_features",
    "default_dependencies_missing",
    "doctor_report",
    "format_report",
]


@dataclass(frozen=True)
class Package:
    """An installable package: what needs it and how to get it."""

    dist: str  # the name pip knows
    module: str  # the name Python imports
    needed_for: str
    install: str  # "" for a default dependency (part of `pip install effseg`)


# Default dependencies first (a missing one is a broken install), then the `all` extra.
PACKAGES: tuple[Package, ...] = (
    Package("torch", "torch", "everything", ""),
    Package("numpy", "numpy", "everything", ""),
    Package("opencv-python-headless", "cv2", "images and video", ""),
    Package("pillow", "PIL", "images", ""),
    Package("albumentations", "albumentations", "training augmentation", ""),
    Package("matplotlib", "matplotlib", "plots in reports", ""),
    Package("rich", "rich", "progress bars and tables", ""),
    Package("onnx", "onnx", "effseg export, --runtime auto and the ONNX runtimes", ""),
    Package("onnxscript", "onnxscript", "ONNX export (torch.onnx's exporter)", ""),
    Package("onnxruntime", "onnxruntime", "--runtime onnxruntime / onnxruntime-int8 (auto's candidates)", ""),
    Package("fastapi", "fastapi", "effseg serve (the web page)", ""),
    Package("uvicorn", "uvicorn", "effseg serve (the web server)", ""),
    Package("python-multipart", "multipart", "effseg serve (image uploads)", ""),
    Package("openvino", "openvino", "--runtime openvino / openvino-int8 (an auto candidate)", "effseg[all]"),
    Package("torchao", "torchao", "--runtime compile-int8 (PyTorch's own int8)", "effseg[all]"),
)

# /proc/cpuinfo flag -> what it is and what uses it.
CPU_FEATURES: dict[str, str] = {
    "avx2": "AVX2 (256-bit vectors: PyTorch, onnxruntime and OpenVINO fp32 and int8 kernels)",
    "fma": "FMA (fused multiply-add)",
    "avx512f": "AVX-512F (512-bit vectors)",
    "avx512_vnni": "AVX-512 VNNI (int8 dot products: fast int8 convolutions)",
    "avx_vnni": "AVX-VNNI (int8 dot products on 256-bit vectors)",
    "avx512_bf16": "AVX-512-BF16 (bf16 dot products: OpenVINO runs bf16)",
    "amx_tile": "AMX tiles (matrix engine)",
    "amx_bf16": "AMX-BF16 (bf16 matrix engine: OpenVINO's bf16 graphs, the README's 98 frames/s Xeon)",
    "amx_int8": "AMX-INT8 (int8 matrix engine)",
}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU's model, cores and the :data:`CPU_FEATURES` flags its kernel reports (``None``
    each when ``cpuinfo`` cannot be read: not Linux), and PyTorch's measured dispatch level."""
    import torch

    info = _read_cpuinfo(cpuinfo)
    flags = set(info.get("flags", "").split())
    return {
        "model": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id"),
        "cores": cpu_cores(),
        "source": cpuinfo if info else None,
        "flags": {flag: (flag in flags) if info else None for flag in CPU_FEATURES},
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _openvino() -> dict[str, Any]:
    """OpenVINO's version, devices and the CPU plugin's own capability probe (FP32, BF16, INT8...)."""
    try:
        import openvino as ov

        core = ov.Core()
        caps = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        hint = core.get_property("CPU", "INFERENCE_PRECISION_HINT")  # an ov.Type: f32, bf16
        precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        return {
            "ok": True,
            "devices": list(core.available_devices),
            "capabilities": caps,
            "precision": precision,
        }
    except Exception as err:  # noqa: BLE001 - a broken install raises anything; reported, not raised
        return {"ok": False, "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"}


def _onnxruntime() -> dict[str, Any]:
    try:
        import onnxruntime as ort

        return {"ok": True, "providers": list(ort.get_available_providers())}
    except Exception as err:  # noqa: BLE001
        return {"ok": False, "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"}


def doctor_report(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Versions, installed packages, runtimes (ready or what they lack), CPU features, missing."""
    from effseg import __version__

    packages = {}
    for p in PACKAGES:
        version = _version(p.dist)
        found = importlib.util.find_spec(p.module) is not None
        packages[p.dist] = {
            "version": version if found else None,
            "needed_for": p.needed_for,
            "install": p.install,
        }
    have = {name: info["version"] is not None for name, info in packages.items()}
    ort = _onnxruntime() if have["onnxruntime"] else {"ok": False, "error": "not installed"}
    ov = _openvino() if have["openvino"] else {"ok": False, "error": "not installed"}
    export = have["onnx"] and have["onnxscript"]
    needs = {
        "eager": [],
        "onnxruntime": [n for n in ("onnx", "onnxscript", "onnxruntime") if not have[n]],
        "onnxruntime-int8": [n for n in ("onnx", "onnxscript", "onnxruntime") if not have[n]],
        "openvino": [n for n in ("onnx", "onnxscript", "openvino") if not have[n]],
        "openvino-int8": [n for n in ("onnx", "onnxscript", "onnxruntime", "openvino") if not have[n]],
        "compile-int8": [] if have["torchao"] else ["torchao"],
        "serve": [n for n in ("fastapi", "uvicorn", "python-multipart") if not have[n]],
    }
    broken = {"onnxruntime": ort, "onnxruntime-int8": ort, "openvino": ov, "openvino-int8": ov}
    runtimes = {}
    for name, missing in needs.items():
        state = {"ready": not missing, "missing": missing}
        probe = broken.get(name)
        if not missing and probe is not None and not probe["ok"]:
            state = {"ready": False, "missing": [], "error": probe["error"]}
        runtimes[name] = state
    auto = [
        n
        for n in ("eager", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8")
        if runtimes[n]["ready"]
    ]
    cpu = cpu_features(cpuinfo)
    return {
        "effseg": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "onnxruntime": ort,
        "openvino": ov,
        "export": export,
        "runtimes": runtimes,
        "auto_candidates": auto,
        "cpu": cpu,
        "missing": [
            {
                "package": name,
                "needed_for": info["needed_for"],
                "install": info["install"] or f"pip install {name}",
            }
            for name, info in packages.items()
            if info["version"] is None
        ],
    }


def _yes(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _cpu_lines(cpu: dict[str, Any], ov: dict[str, Any]) -> list[str]:
    flags = cpu["flags"]
    source = cpu["source"] or "no /proc/cpuinfo"
    lines = [
        f"cpu: {cpu['model']}, {cpu['cores']} cores; instruction sets from {source}:",
        *(f"  {_yes(flags[f]):<7} {desc}" for f, desc in CPU_FEATURES.items()),
        f"  PyTorch dispatches to: {cpu['torch_capability']} (torch.backends.cpu.get_cpu_capability())",
    ]
    if ov.get("ok"):
        lines.append(
            f"  OpenVINO's CPU probe: {', '.join(ov['capabilities'])}; default precision {ov['precision']}"
        )
    bf16 = flags["amx_bf16"] or flags["avx512_bf16"]
    vnni = flags["avx512_vnni"] or flags["avx_vnni"] or flags["amx_int8"]
    if bf16 is not None:
        lines.append(
            "  bf16: OpenVINO runs bf16 graphs here (AMX or AVX-512-BF16)"
            if bf16
            else "  bf16: no AMX / AVX-512-BF16: OpenVINO runs fp32 here (not the README's bf16 Xeon rates)"
        )
    if vnni is not None:
        lines.append(
            "  int8: VNNI dot products present (int8 runtimes use them)"
            if vnni
            else "  int8: no VNNI: int8 runtimes use integer kernels without dot products (auto times them)"
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines ``effseg doctor`` prints."""
    lines = [f"effseg {report['effseg']}, python {report['python']}, {report['platform']}", "packages:"]
    for name, info in report["packages"].items():
        version = info["version"] or "MISSING"
        extra = "" if not info["install"] else f"  [{info['install']}]"
        lines.append(f"  {name:<24}{version:<14}{info['needed_for']}{extra}")
    ort, ov = report["onnxruntime"], report["openvino"]
    if ort.get("ok"):
        lines.append(f"  onnxruntime providers: {', '.join(ort['providers'])}")
    if ov.get("ok"):
        lines.append(f"  openvino devices: {', '.join(ov['devices'])}")
    lines.append("runtimes (--runtime of predict, serve, bench, eval):")
    for name, state in report["runtimes"].items():
        if state["ready"]:
            status = "ready"
        elif state.get("error"):
            status = f"BROKEN ({state['error']})"
        else:
            status = f"needs {', '.join(state['missing'])}"
        lines.append(f"  {name:<17}{status}")
    lines.append(
        f"  auto times: {', '.join(report['auto_candidates'])} (on the first frames; keeps the fastest)"
    )
    lines += _cpu_lines(report["cpu"], ov)
    if report["missing"]:
        lines.append("missing:")
        for m in report["missing"]:
            how = f"pip install '{m['install']}'" if m["install"].startswith("effseg[") else m["install"]
            lines.append(f"  {m['package']}: {m['needed_for']}; {how}")
    else:
        lines.append("missing: nothing (every runtime effseg knows is installed)")
    return "\n".join(lines)


def default_dependencies_missing(report: dict[str, Any]) -> list[str]:
    """The default dependencies (``pip install effseg``) that are not installed: a broken install."""
    return [m["package"] for m in report["missing"] if not report["packages"][m["package"]]["install"]]
