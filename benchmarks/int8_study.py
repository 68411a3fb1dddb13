"""Where int8 loses on MobileNetV3 (depthwise, squeeze-excitation, hard-swish): an op-by-op study.

    python benchmarks/int8_study.py                                  # LR-ASPP-MobileNetV3-Large, 1024x512
    python benchmarks/int8_study.py --size 64x32 --runs 2 --variants qdq-pc,qop-pc --levels all \\
        --out /tmp/int8.md                                           # a quick check that it runs
    # in the separate venv made by benchmarks/torchvision_venv.sh (torchvision importable):
    /tmp/effseg-tv-venv/bin/python benchmarks/int8_study.py --compare-torchvision

Exports the model (random weights unless ``--model``) to ONNX once, quantizes it statically in
each variant, and for each variant x graph-optimisation level: saves the optimised model once
(``optimized_model_filepath``), times ``--runs`` calls (median ms, batch 1), measures argmax
agreement with fp32 on the calibration images, and profiles one session with onnxruntime's
profiler (time per operator type per call, the QuantizeLinear/DequantizeLinear share).

Variants (``--variants``, comma-separated; default all):

    qdq-pc          QDQ format, weights per channel (effseg's default)
    qdq-pt          QDQ, weights per tensor
    qop-pc          QOperator format (QLinearConv ...), per channel
    qop-pt          QOperator, per tensor
    qdq-pc-fp32dw   QDQ per channel, depthwise convolutions kept in fp32
    qdq-pc-fp32se   QDQ per channel, squeeze-excitation (ReduceMean, its 1x1 convs, HardSigmoid, Mul) in fp32
    qdq-pc-fp32hs   QDQ per channel, HardSwish kept in fp32
    qdq-pc-fp32all  QDQ per channel, depthwise + SE + HardSwish in fp32

``--torch`` adds two PyTorch rows timed the same way (median of ``--runs`` after a warm-up call):
``compile`` (inductor with freezing, fp32) and ``compile-int8`` (effseg.deploy.pt2e: PT2E int8 for
x86, torchao's X86InductorQuantizer, calibrated on the same images, compiled by inductor).

``--openvino`` adds one *interleaved* run (one call of each in turn, ``--runs`` rounds, median)
of onnxruntime against OpenVINO (effseg.deploy.openvino_io) on the same files: effseg's fp32 file
in onnxruntime, in OpenVINO at its default precision (bf16 on CPUs with AMX) and at f32, the
``qdq-pc`` int8 file in OpenVINO, and with ``--compare-torchvision`` torchvision's file in
onnxruntime and in OpenVINO; argmax agreement with onnxruntime fp32 on the calibration images.

``--compare-torchvision`` also exports torchvision's ``lraspp_mobilenet_v3_large`` (same classes;
random weights, or with ``--model`` an effseg LR-ASPP-MobileNetV3-Large checkpoint's own weights,
renamed to torchvision's keys: the two files then compute the same function) and times it in
onnxruntime with the same session options: the issue's goal is effseg's best runtime <= 0.5x
torchvision's onnxruntime time. ``benchmarks/engine_isolated.py --labels`` times both files from
input to class ids. Sets ``OMP_WAIT_POLICY=PASSIVE``
unless set. Timings: run it on a quiet machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "qdq-pc": ("QDQ", True, ()),
    "qdq-pt": ("QDQ", False, ()),
    "qop-pc": ("QOperator", True, ()),
    "qop-pt": ("QOperator", False, ()),
    "qdq-pc-fp32dw": ("QDQ", True, ("dw",)),
    "qdq-pc-fp32se": ("QDQ", True, ("se",)),
    "qdq-pc-fp32hs": ("QDQ", True, ("hs",)),
    "qdq-pc-fp32all": ("QDQ", True, ("dw", "se", "hs")),
}
LEVELS = ("basic", "extended", "all")


def _deploy():
    """``(export_onnx, ort_session)`` from wherever effseg's deploy code lives."""
    from effseg.pipeline.export_cache import deploy_functions as deploy

    export_onnx, ort_session, _ = deploy()
    return export_onnx, ort_session


def keep_fp32_nodes(model, groups: tuple[str, ...]) -> list[str]:
    """Names of the nodes of ``groups`` (``dw`` depthwise convs, ``se`` squeeze-excitation: pool,
    its two 1x1 convs, HardSigmoid and the channel-scaling Mul; ``hs`` hard-swish: a HardSwish node
    or the ``Mul(x, HardSigmoid(x))`` pair it is decomposed into) in an onnx ModelProto."""
    from onnx import helper

    producer = {o: n for n in model.graph.node for o in n.output}
    pools = ("ReduceMean", "GlobalAveragePool")

    def src(name: str):
        return producer.get(name)

    def is_fc1(n) -> bool:
        return (
            n is not None
            and n.op_type == "Conv"
            and src(n.input[0]) is not None
            and src(n.input[0]).op_type in pools
        )

    def is_fc2(n) -> bool:
        relu = src(n.input[0]) if n is not None and n.op_type == "Conv" else None
        return relu is not None and relu.op_type == "Relu" and is_fc1(src(relu.input[0]))

    def hswish_pair(n) -> list[str]:
        if n.op_type != "Mul" or len(n.input) != 2:
            return []
        for a, b in (n.input, n.input[::-1]):
            hsig = src(b)
            if hsig is not None and hsig.op_type == "HardSigmoid" and hsig.input[0] == a:
                return [n.name, hsig.name]
        return []

    names: list[str] = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if "dw" in groups and n.op_type == "Conv" and int(attrs.get("group", 1)) > 1:
            names.append(n.name)
        if "hs" in groups:
            names += [n.name] if n.op_type == "HardSwish" else hswish_pair(n)
        if "se" in groups:
            gate = n.op_type == "HardSigmoid" and is_fc2(src(n.input[0]))
            scale = n.op_type == "Mul" and any(
                (g := src(i)) is not None and g.op_type == "HardSigmoid" and is_fc2(src(g.input[0]))
                for i in n.input
            )
            if n.op_type in pools or is_fc1(n) or is_fc2(n) or gate or scale:
                names.append(n.name)
    return names


def name_nodes(model) -> None:
    """Give every unnamed node a unique name (``nodes_to_exclude`` works by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def quantize(fp32: Path, out: Path, variant: str, calib: list[np.ndarray]) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from effseg.deploy.quantize import ArrayCalibrationReader

    fmt, per_channel, groups = VARIANTS[variant]
    prepped = out.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=False)
    model = onnx.load(str(prepped))
    name_nodes(model)  # the pre-processing decomposes HardSwish into unnamed HardSigmoid + Mul nodes
    onnx.save(model, str(prepped))
    exclude = keep_fp32_nodes(model, groups)
    # As effseg's quantize_onnx: the classifier conv and the final upsample stay fp32.
    from effseg.deploy.quantize import _logit_nodes

    exclude += _logit_nodes(model)
    t0 = time.perf_counter()
    quantize_static(
        str(prepped),
        str(out),
        ArrayCalibrationReader(model.graph.input[0].name, calib),
        quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=sorted(set(exclude)),
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True},
    )
    prepped.unlink(missing_ok=True)
    seconds = round(time.perf_counter() - t0, 1)
    info = {"format": fmt, "per_channel": per_channel, "fp32_groups": list(groups)}
    return {**info, "fp32_nodes": len(exclude), "seconds": seconds}


def session(path: Path, level: str, optimized: Path | None = None, profile: bool = False):
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    spinning = os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(path.with_suffix("")) + f".{level}.profile"
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_session(sess, x: np.ndarray, runs: int) -> float:
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def profile_ops(path: Path, level: str, x: np.ndarray, runs: int) -> dict[str, float]:
    """Mean ms per call spent in each operator type (onnxruntime's profiler, ``Node`` events)."""
    sess = session(path, level, profile=True)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(runs):
        sess.run(None, feed)
    trace = Path(sess.end_profiling())
    per_op: dict[str, float] = defaultdict(float)
    for ev in json.loads(trace.read_text()):
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_op[ev.get("args", {}).get("op_name", "?")] += ev.get("dur", 0) / 1000.0 / runs
    trace.unlink(missing_ok=True)
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def agreement(a, b, xs: list[np.ndarray]) -> float:
    same = total = 0
    for x in xs:
        la = a.run(None, {a.get_inputs()[0].name: x})[0].argmax(1)
        lb = b.run(None, {b.get_inputs()[0].name: x})[0].argmax(1)
        same, total = same + int((la == lb).sum()), total + la.size
    return same / max(total, 1)


def calibration(size: tuple[int, int], n: int, camvid: Path, mean, std) -> tuple[list[np.ndarray], str]:
    """``n`` inputs (1, 3, H, W): CamVid train photos when present (never val: the int8 models
    of a trained ``--model`` are scored on val), else random normal."""
    from effseg.deploy.quantize import preprocess

    photos = sorted((camvid / "train").glob("*.png")) + sorted((camvid / "train").glob("*.jpg"))
    if photos:
        from PIL import Image

        picks = [photos[int(i)] for i in np.linspace(0, len(photos) - 1, n).round()]
        return [
            preprocess(np.asarray(Image.open(p).convert("RGB")), size, mean, std) for p in picks
        ], "CamVid train"
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, *size)).astype(np.float32) for _ in range(n)], "random normal"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="lraspp:mobilenetv3_large", help="HEAD:BACKBONE (random weights)")
    parser.add_argument("--model", default=None, help="a trained model (anything effseg.load accepts)")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--size", default="1024x512", help="WIDTHxHEIGHT (default 1024x512)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--profile-runs", type=int, default=5)
    parser.add_argument("--calib", type=int, default=16, help="calibration images")
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "camvid")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--torch", action="store_true", help="add the compile / compile-int8 rows")
    parser.add_argument("--compare-torchvision", action="store_true")
    parser.add_argument("--openvino", action="store_true", help="add the interleaved OpenVINO run")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the files (default: a temp folder)"
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown to write")
    args = parser.parse_args(argv)

    import torch

    import effseg
    from effseg.api import parse_size

    w, h = parse_size(args.size)
    work = args.work or Path(tempfile.mkdtemp(prefix="effseg-int8-study-"))
    work.mkdir(parents=True, exist_ok=True)
    export_onnx, _ = _deploy()
    if args.model:
        predictor = effseg.load(args.model)
        model, name = predictor.model, args.model
        mean, std = predictor.mean.flatten().tolist(), predictor.std.flatten().tolist()
        args.classes = predictor.num_classes  # torchvision's model gets the checkpoint's classes
    else:
        head, _, backbone = args.arch.partition(":")
        model = effseg.build_model(head, backbone=backbone, num_classes=args.classes, aux=False,
                                   output_stride=args.output_stride)  # fmt: skip
        name = f"{args.arch} OS{args.output_stride} (random weights)"
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    fp32 = work / "fp32.onnx"
    export_onnx(model.eval(), fp32, input_size=(h, w), meta={"mean": mean, "std": std})
    calib, calib_src = calibration((h, w), args.calib, args.camvid, mean, std)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    flags = subprocess.run(
        ["grep", "-m1", "-o", "avx512_vnni", "/proc/cpuinfo"], capture_output=True, text=True
    )
    header = (f"{name} at {w}x{h}, batch 1; {cpu} ({'VNNI' if flags.stdout else 'no VNNI'}), "
              f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, "
              f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
              f"calibration {len(calib)} {calib_src} images")  # fmt: skip
    print(header)
    files = {"fp32": (fp32, {})}
    for v in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if v not in VARIANTS:
            raise SystemExit(f"--variants {v!r}: expected some of {', '.join(VARIANTS)}")
        files[v] = (work / f"{v}.onnx", quantize(fp32, work / f"{v}.onnx", v, calib))
    ref = session(fp32, "all")
    rows, profiles = [], {}
    for v, (path, info) in files.items():
        for level in [lv.strip() for lv in args.levels.split(",") if lv.strip()]:
            opt = work / f"{v}.{level}.optimized.onnx"
            sess = session(path, level, optimized=None if opt.exists() else opt)  # saved once
            ms = time_session(sess, calib[0], args.runs)
            agree = agreement(ref, sess, calib) if v != "fp32" else 1.0
            rows.append((v, level, ms, agree, info))
            print(f"{v:16s} {level:9s} {ms:9.2f} ms  argmax agreement {agree:.4f}  {info}")
        profiles[v] = profile_ops(path, "all", calib[0], args.profile_runs)
    if args.torch:
        for v, ms, agree in torch_rows(model, calib, ref, args.runs):
            rows.append((v, "inductor", ms, agree, {}))
            print(f"{v:16s} {'inductor':9s} {ms:9.2f} ms  argmax agreement {agree:.4f}")
    tv_ms = None
    if args.compare_torchvision:
        tv_weights = model.state_dict() if args.model else None  # a checkpoint's: same function
        tv_ms = torchvision_ms(args, (h, w), calib[0], work, tv_weights)
        print(f"torchvision lraspp_mobilenet_v3_large onnxruntime (all): {tv_ms:.2f} ms")
        if args.torch:
            tv_torch = torch_rows(torchvision_logits(args.classes, tv_weights), calib, None, args.runs)
            for v, ms, _ in tv_torch:
                rows.append((f"torchvision {v}", "inductor", ms, float("nan"), {}))
                print(f"torchvision {v:16s} {ms:9.2f} ms")
    ov_rows = []
    if args.openvino:
        tv_path = work / "torchvision_lraspp.onnx" if args.compare_torchvision else None
        int8_path = files["qdq-pc"][0] if "qdq-pc" in files else None
        ov_rows = openvino_rows(fp32, int8_path, tv_path, calib, args.runs)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    md = [f"int8 study: {header}.", "", f"Command: `python benchmarks/int8_study.py {command}`", "",
          "| variant | graph optimisation | median ms | vs fp32 (all) | argmax agreement with fp32 |",
          "|---|---|---:|---:|---:|"]  # fmt: skip
    base = next(ms for v, lv, ms, _, _ in rows if v == "fp32" and lv == "all") if any(
        v == "fp32" and lv == "all" for v, lv, *_ in rows) else rows[0][2]  # fmt: skip
    md += [f"| {v} | {lv} | {ms:.2f} | {ms / base:.2f}x | {'-' if a != a else f'{a:.2%}'} |"
           for v, lv, ms, a, _ in rows]  # fmt: skip
    if tv_ms is not None:
        best = min(r[2] for r in rows if not r[0].startswith("torchvision"))
        md += ["", f"torchvision LR-ASPP-MobileNetV3-Large, onnxruntime (all): {tv_ms:.2f} ms; effseg's best "
               f"row {best:.2f} ms = {best / tv_ms:.2f}x (goal <= 0.5x)."]  # fmt: skip
    if ov_rows:
        md += ["", f"onnxruntime against OpenVINO, interleaved ({args.runs} rounds, one call of each):", "",
               "| file | engine | precision | median ms | vs torchvision onnxruntime | argmax agreement |",
               "|---|---|---|---:|---:|---:|"]  # fmt: skip
        tv = next((ms for f, e, _, ms, _ in ov_rows if f == "torchvision fp32" and e == "onnxruntime"), None)
        md += [f"| {f} | {e} | {p} | {ms:.2f} | {f'{ms / tv:.2f}x' if tv else '-'} | "
               f"{'-' if a != a else f'{a:.2%}'} |" for f, e, p, ms, a in ov_rows]  # fmt: skip
    md += ["", "Time per operator type (ms per call, onnxruntime profiler, optimisation level all):", ""]
    for v, ops in profiles.items():
        qdq = sum(t for op, t in ops.items() if op in ("QuantizeLinear", "DequantizeLinear"))
        top = ", ".join(f"{op} {t:.2f}" for op, t in list(ops.items())[:8])
        md.append(f"- **{v}**: total {sum(ops.values()):.2f}, Quantize/DequantizeLinear {qdq:.2f}; {top}")
    text = "\n".join(md) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def openvino_rows(
    fp32: Path, int8: Path | None, torchvision: Path | None, calib: list[np.ndarray], runs: int
) -> list[tuple[str, str, str, float, float]]:
    """``[(file, engine, precision, median ms, argmax agreement with onnxruntime fp32)]``, the
    sessions timed interleaved: one call of each per round, ``runs`` rounds after one warm-up."""
    from effseg.deploy.onnx_io import onnx_session

    sessions = [("effseg fp32", "onnxruntime", session(fp32, "all"))]
    sessions += [("effseg fp32", "openvino", onnx_session(fp32, "openvino"))]
    sessions += [("effseg fp32", "openvino", onnx_session(fp32, "openvino", precision="f32"))]
    if int8 is not None:
        sessions += [("effseg int8 (qdq-pc)", "openvino", onnx_session(int8, "openvino"))]
    if torchvision is not None:
        sessions += [("torchvision fp32", "onnxruntime", session(torchvision, "all"))]
        sessions += [("torchvision fp32", "openvino", onnx_session(torchvision, "openvino"))]
    ref = sessions[0][2]
    x = calib[0]
    times: list[list[float]] = [[] for _ in sessions]
    for _, _, sess in sessions:
        sess.run(None, {sess.get_inputs()[0].name: x})
    for _ in range(runs):
        for i, (_, _, sess) in enumerate(sessions):
            feed = {sess.get_inputs()[0].name: x}
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[i].append(time.perf_counter() - t0)
    rows = []
    for (name, engine, sess), ts in zip(sessions, times, strict=True):
        precision = getattr(sess, "precision", "f32")
        agree = agreement(ref, sess, calib) if name.startswith("effseg") else float("nan")
        rows.append((name, engine, precision, float(np.median(ts) * 1000), agree))
        print(f"{name:22s} {engine:12s} {precision:5s} {rows[-1][3]:9.2f} ms  agreement {agree:.4f}")
    return rows


def torch_rows(model, calib: list[np.ndarray], ref, runs: int) -> list[tuple[str, float, float]]:
    """``[(name, median ms, argmax agreement with the fp32 ONNX session ref)]`` for ``compile``
    (inductor, freezing, fp32) and ``compile-int8`` (effseg.deploy.pt2e), on ``calib[0]``."""
    import torch
    import torch._inductor.config as inductor_config

    from effseg.deploy.pt2e import compile_int8

    xs = [torch.from_numpy(a) for a in calib]
    fp32 = torch.compile(model.eval(), dynamic=False)

    def compiled(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), inductor_config.patch(freezing=True):
            return fp32(t)

    out = []
    for name, fn in (("compile", compiled), ("compile-int8", compile_int8(model, xs))):
        fn(xs[0])  # compiles
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(xs[0])
            times.append(time.perf_counter() - t0)
        agree = float("nan")  # no reference session (torchvision's model): no agreement column
        if ref is not None:
            same = total = 0
            for a, x in zip(calib, xs, strict=True):
                la = ref.run(None, {ref.get_inputs()[0].name: a})[0].argmax(1)
                lb = fn(x).argmax(1).numpy()
                same, total = same + int((la == lb).sum()), total + la.size
            agree = same / total
        out.append((name, float(np.median(times) * 1000), agree))
    return out


def torchvision_state_dict(effseg_state: dict) -> dict:
    """An effseg ``lraspp`` + ``mobilenetv3_large`` state dict under torchvision's keys: the
    backbone keeps torchvision's layer names (``backbone.features.N`` -> ``backbone.N``) and the
    head is torchvision's ``LRASPPHead`` (``head.`` -> ``classifier.``)."""
    renamed = {}
    for key, value in effseg_state.items():
        if key.startswith("backbone.features."):
            renamed["backbone." + key[len("backbone.features.") :]] = value
        elif key.startswith("head."):
            renamed["classifier." + key[len("head.") :]] = value
        elif key.startswith("aux_head."):
            continue  # training only: eval mode never runs it (torchvision's aux_loss=False)
        else:
            raise SystemExit(f"--compare-torchvision: {key}: not an LR-ASPP-MobileNetV3 weight of effseg")
    return renamed


def torchvision_logits(classes: int, effseg_state: dict | None = None):
    """torchvision's LR-ASPP-MobileNetV3-Large (random weights, or ``effseg_state`` renamed by
    :func:`torchvision_state_dict`) as a module returning the logits."""
    try:
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large
    except ImportError:
        raise SystemExit(
            "--compare-torchvision needs torchvision: run benchmarks/torchvision_venv.sh first"
        ) from None
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=classes)
            if effseg_state is not None:
                self.net.load_state_dict(torchvision_state_dict(effseg_state))  # strict: every key

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.net(t)["out"]

    return Logits().eval()


def torchvision_ms(
    args: argparse.Namespace, size: tuple[int, int], x: np.ndarray, work: Path, effseg_state: dict | None
) -> float:
    """torchvision's LR-ASPP-MobileNetV3-Large exported and timed like effseg's files."""
    export_onnx, _ = _deploy()
    path = work / "torchvision_lraspp.onnx"
    export_onnx(torchvision_logits(args.classes, effseg_state), path, input_size=size)
    return time_session(session(path, "all"), x, args.runs)


if __name__ == "__main__":
    raise SystemExit(main())
