"""Where inference time goes, measured on effseg's own models (used by efficiency_report.py).

- :func:`layer_type_times`: eager time per layer type from ``torch.profiler``
  (self CPU time of each aten op, grouped into convolution / BatchNorm /
  activation / upsample / pooling / elementwise / other).
- :func:`conv_kind_stats`: FLOPs, time and achieved GFLOP/s per kind of
  convolution (dense 3x3, dilated 3x3, 1x1, depthwise), from forward hooks on
  every ``nn.Conv2d`` (the profiler does not tell a depthwise conv from a dense one).
- :func:`onnxruntime_op_times`: time per ONNX operator type from onnxruntime's
  own profiler.
- :func:`depthwise_separable_table`: each MobileNetV2 inverted residual's
  depthwise 3x3 + 1x1 projection against a standard 3x3 conv with the same input
  and output channels, stride and dilation, at the real feature-map size.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

# aten op name fragment -> layer type (first match wins)
_OP_GROUPS = (
    ("conv", "convolution"),
    ("batch_norm", "batchnorm"),
    ("relu", "activation"),
    ("hardtanh", "activation"),
    ("hardswish", "activation"),
    ("hardsigmoid", "activation"),
    ("sigmoid", "activation"),
    ("upsample", "upsample"),
    ("pool", "pooling"),
    ("mean", "pooling"),
    ("bmm", "matmul"),
    ("matmul", "matmul"),
    ("mm", "matmul"),
    ("softmax", "softmax"),
    ("add", "elementwise"),
    ("mul", "elementwise"),
    ("cat", "concat"),
)


def _group(op: str) -> str:
    name = op.split("::")[-1]
    for key, group in _OP_GROUPS:
        if key in name:
            return group
    return "other"


def layer_type_times(model: nn.Module, x: torch.Tensor, warmup: int = 1) -> dict[str, float]:
    """Eager ms per layer type for one forward of ``x`` (self CPU time, so nothing counts twice)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    totals: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        if evt.key.startswith("aten::") or evt.key.startswith("mkldnn"):
            totals[_group(evt.key)] += evt.self_cpu_time_total / 1000.0
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def conv_kind(conv: nn.Conv2d) -> str:
    """``depthwise``, ``1x1``, ``dilated 3x3`` or ``3x3`` (other kernels: ``KxK``)."""
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise"
    k = conv.kernel_size[0]
    if k == 1:
        return "1x1"
    return f"dilated {k}x{k}" if max(conv.dilation) > 1 else f"{k}x{k}"


def conv_flops(conv: nn.Conv2d, out_shape: torch.Size) -> float:
    """FLOPs of one conv call (2 per multiply-add): 2 * out elements * (in_channels / groups) * kh * kw."""
    kh, kw = conv.kernel_size
    return 2.0 * out_shape.numel() * (conv.in_channels // conv.groups) * kh * kw


def conv_kind_stats(model: nn.Module, x: torch.Tensor, runs: int = 1) -> dict[str, dict[str, float]]:
    """Per conv kind: count, GFLOPs, ms (median-free sum over one call) and achieved GFLOP/s."""
    stats: dict[str, dict[str, float]] = defaultdict(lambda: {"count": 0, "gflops": 0.0, "ms": 0.0})
    starts: dict[int, float] = {}
    handles = []

    def pre(mod: nn.Module, _inp: Any) -> None:
        starts[id(mod)] = time.perf_counter()

    def post(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        s = stats[conv_kind(mod)]  # type: ignore[arg-type]
        s["ms"] += (time.perf_counter() - starts[id(mod)]) * 1000 / runs
        s["gflops"] += conv_flops(mod, out.shape) / 1e9 / runs  # type: ignore[arg-type]
        s["count"] += 1 / runs

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            model(x)  # warm-up, not recorded
            stats.clear()
            for _ in range(runs):
                model(x)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for k, s in sorted(stats.items(), key=lambda kv: -kv[1]["ms"]):
        out[k] = {
            **s,
            "count": round(s["count"]),
            "gflops_per_s": s["gflops"] / (s["ms"] / 1000) if s["ms"] else 0,
        }
    return out


def onnxruntime_op_times(
    onnx_path: str | Path, x: torch.Tensor, threads: int | None = None, runs: int = 2
) -> dict[str, float]:
    """ms per ONNX op type per run, from onnxruntime's profiler (after one unprofiled warm-up run
    is excluded by dropping the first run's events)."""
    from effseg.deploy.onnx_io import ort_session

    sess = ort_session(onnx_path, threads=threads, profile=True)
    name = sess.get_inputs()[0].name
    arr = x.numpy()
    for _ in range(runs + 1):
        sess.run(None, {name: arr})
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink(missing_ok=True)
    runs_ev = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = runs_ev[0]["ts"] + runs_ev[0]["dur"] if runs_ev else 0
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] > first_end:
            totals[e.get("args", {}).get("op_name", "?")] += e["dur"] / 1000.0 / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def depthwise_separable_table(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """For each MobileNetV2 inverted residual block (depthwise 3x3 + 1x1 projection), FLOPs and
    parameters against a standard 3x3 conv hidden->out with the same stride/dilation, at the
    feature-map size reached with input ``x``."""
    rows: list[dict[str, Any]] = []
    shapes: dict[int, tuple[torch.Size, torch.Size]] = {}
    handles = []
    blocks = []
    for name, m in model.named_modules():
        convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)] if hasattr(m, "use_res_connect") else []
        dws = [c for c in convs if c.groups > 1 and c.groups == c.in_channels]
        if dws:
            dw = dws[0]
            proj = convs[convs.index(dw) + 1]
            blocks.append((name, dw, proj))
            for c in (dw, proj):
                handles.append(
                    c.register_forward_hook(
                        lambda mod, inp, out: shapes.__setitem__(id(mod), (inp[0].shape, out.shape))
                    )
                )
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for name, dw, proj in blocks:
        if id(dw) not in shapes:
            continue
        (dw_in, dw_out), (_, pr_out) = shapes[id(dw)], shapes[id(proj)]
        hidden, out_ch = dw.in_channels, proj.out_channels
        sep_flops = conv_flops(dw, dw_out) + conv_flops(proj, pr_out)
        sep_params = dw.weight.numel() + proj.weight.numel()
        std_flops = 2.0 * pr_out.numel() * hidden * 9
        std_params = hidden * out_ch * 9
        rows.append(
            {
                "block": name,
                "in_hw": list(dw_in[-2:]),
                "out_hw": list(pr_out[-2:]),
                "hidden": hidden,
                "out": out_ch,
                "stride": dw.stride[0],
                "dilation": dw.dilation[0],
                "separable_gflops": sep_flops / 1e9,
                "standard_gflops": std_flops / 1e9,
                "separable_params": sep_params,
                "standard_params": std_params,
                "flops_ratio": sep_flops / std_flops,
                "theory_ratio": 1 / out_ch + 1 / 9,
            }
        )
    return rows
