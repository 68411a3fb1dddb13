"""End-to-end speed of `effseg predict`: decode + preprocess + model + argmax + encode, batch 1.

    python benchmarks/bench_pipeline.py --model camvid-<name>            # a shipped / trained model
    python benchmarks/bench_pipeline.py --arch lraspp:mobilenetv3_large  # random weights, 11 classes
    python benchmarks/bench_pipeline.py --arch lraspp:mobilenetv3_small --size 64x48 --frames 6 \\
        --runtimes eager,onnxruntime --out /tmp/bench.md                 # a quick check it runs

For each runtime: one run over a folder of PNG frames (colour masks written as PNGs) and one over
a video (an ``.mp4`` colour-mask video written), each reporting end-to-end FPS (wall time of the
pipeline, first frame's warm-up excluded) and model-only FPS (normalised tensor in, class ids out).
Then the final upsample + argmax alone, per method (interleaved: every round times each method
once): the eager runtime's network-size logits to the frame size, and the model's own
low-resolution logits (the graph cut before its final Resize) to the frame size, each by
PyTorch's full bilinear upsample + argmax (the reference) and by effseg's exact boundary-only
upsample; and onnxruntime with the ArgMax in the graph (uint8 out) against the logits graph +
argmax outside. Frames larger than the network (``--size 960x720`` with a shipped 480x360 model)
make the eager rows upsample.

Frames are CamVid val photos resized to ``--size`` (default 480x360) when ``--camvid`` exists,
else a synthetic moving scene. Prints the machine (lscpu model name) and the load, and writes a
markdown snippet (``--out``). Sets ``OMP_WAIT_POLICY=PASSIVE`` unless set (recorded).
Run it on a quiet machine: the figures are timings.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist"]  # fmt: skip


def machine() -> str:
    """``lscpu``'s model name, cores and the 1-minute load."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?"
        )
    except OSError:
        model = "?"
    return f"{model}, {os.cpu_count()} logical CPUs, load {os.getloadavg()[0]:.2f}"


def make_frames(folder: Path, n: int, size: tuple[int, int], camvid: Path | None) -> list[Path]:
    """``n`` RGB PNG frames of ``size`` = (W, H) in ``folder``: CamVid val photos or a synthetic scene."""
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    photos = sorted((camvid / "val").glob("*.jpg")) if camvid and (camvid / "val").is_dir() else []
    paths = []
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        if photos:
            rgb = np.asarray(Image.open(photos[i % len(photos)]).convert("RGB"))
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        else:
            rgb = np.stack([(xx * 2 + i * 5) % 256, (yy * 3) % 256, ((xx + yy + i) * 2) % 256], -1).astype(
                np.uint8
            )
        paths.append(folder / f"frame_{i:05d}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def make_video(frames: list[Path], path: Path, fps: float = 30.0) -> Path:
    import cv2

    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (first.shape[1], first.shape[0])
    )
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return path


def random_checkpoint(arch: str, path: Path) -> Path:
    """``HEAD:BACKBONE`` with random weights and the 11 CamVid classes, saved as an effseg checkpoint."""
    import torch

    import effseg

    head, _, backbone = arch.partition(":")
    model = effseg.build_model(
        head, backbone=backbone or "resnet18", num_classes=len(CAMVID_CLASSES), aux=False
    )
    rng = np.random.default_rng(0)
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": model.config,
            "classes": CAMVID_CLASSES,
            "palette": rng.integers(0, 256, (len(CAMVID_CLASSES), 3)).tolist(),
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "config": {},
        },
        path,
    )
    return path


def time_postprocess(predictor, frame: np.ndarray, cache_dir: Path, runs: int) -> dict[str, float]:
    """Median ms of each upsample + argmax method on the model's low-resolution logits of ``frame``."""
    import torch

    from effseg.pipeline import engines as rt
    from effseg.pipeline import export_cache
    from effseg.pipeline.postprocess import reference_argmax, upsample_argmax

    h, w = frame.shape[:2]
    engine = rt.TorchEngine(predictor)
    x = engine.prepare(frame)
    cache = rt.ExportCache(cache_dir, predictor.model, {"classes": list(predictor.classes)})
    _, ort_session, _ = export_cache.deploy_functions()
    base = cache.onnx((h, w), "fp32")
    sessions = {k: ort_session(p) for k, p in (("logits", base), ("labels", cache.derived(base, "labels")))}
    lowres_path = cache.derived(base, "lowres")
    if lowres_path is not None:
        sessions["lowres"] = ort_session(lowres_path)
    feed = {sessions["logits"].get_inputs()[0].name: np.ascontiguousarray(x.numpy())}
    low = torch.from_numpy(sessions["lowres"].run(None, feed)[0]) if "lowres" in sessions else None
    full_logits = sessions["logits"].run(None, feed)[0]
    xe = rt.TorchEngine(predictor, predictor.input_size).prepare(frame)  # as `effseg predict` feeds it
    with torch.inference_mode():  # the eager runtime's logits: the network's size, not the frame's
        net = predictor.model(xe.to(predictor.device)).float().cpu()
    net_size = f"{net.shape[-1]}x{net.shape[-2]}"
    methods = {
        f"eager: network logits ({net_size}) -> frame, full bilinear + argmax (the eager runtime)": lambda: (
            reference_argmax(net, (h, w))
        ),
        f"eager: network logits ({net_size}) -> frame, exact boundary-only upsample + argmax": lambda: (
            upsample_argmax(net, (h, w))
        ),
        "torch: full bilinear upsample + argmax (reference)": lambda: reference_argmax(low, (h, w)),
        "torch: exact boundary-only upsample + argmax": lambda: upsample_argmax(low, (h, w)),
        "numpy argmax of onnxruntime full-size logits (no network)": lambda: (
            full_logits[0].argmax(0).astype(np.uint8)
        ),
        "onnxruntime graph, logits out + torch argmax": lambda: torch.from_numpy(
            sessions["logits"].run(None, feed)[0]
        ).argmax(1),
        "onnxruntime graph, ArgMax in graph (uint8 out)": lambda: sessions["labels"].run(None, feed)[0],
    }
    if low is None:
        methods = {k: v for k, v in methods.items() if not k.startswith("torch:")}
    else:
        methods["onnxruntime graph cut before the final Resize (low-res out)"] = lambda: sessions[
            "lowres"
        ].run(None, feed)[0]
        methods["onnxruntime low-res graph + exact boundary-only upsample + argmax"] = lambda: (
            upsample_argmax(torch.from_numpy(sessions["lowres"].run(None, feed)[0]), (h, w))
        )
    times: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():  # warm-up
        fn()
    for _ in range(runs):  # interleaved: each round times every method once, so load drifts hit all alike
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t) * 1000) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="anything effseg.load accepts (shipped name, run folder, .pt, .onnx)")
    which.add_argument("--arch", help="HEAD:BACKBONE with random weights, e.g. lraspp:mobilenetv3_large")
    parser.add_argument("--size", default="480x360", help="frame size WIDTHxHEIGHT (default 480x360)")
    parser.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    parser.add_argument("--runtimes", default="eager,onnxruntime,onnxruntime-int8,auto")
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "camvid")
    parser.add_argument("--postprocess-runs", type=int, default=50)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch / onnxruntime threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown snippet to write")
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    import effseg
    from effseg.api import parse_size
    from effseg.pipeline.predict import Outputs, predict

    if args.threads:
        torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="effseg-bench-pipeline-"))
    os.environ.setdefault("EFFSEG_CACHE", str(work / "cache"))
    spec = args.model or str(random_checkpoint(args.arch, work / "model.pt"))
    name = args.model or f"{args.arch} (random weights)"
    frames = make_frames(work / "frames", args.frames, size, args.camvid)
    video = make_video(frames, work / "input.mp4")
    header = machine()
    omp = os.environ["OMP_WAIT_POLICY"]
    print(f"machine: {header}; threads {torch.get_num_threads()}; OMP_WAIT_POLICY={omp}")
    predictor = effseg.load(spec, batch_size=1)
    rows = []
    for runtime in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
        for kind, inputs, out in (
            ("folder of PNG frames", [work / "frames"], Outputs(work / f"out-{runtime}")),
            ("mp4 video", [video], Outputs(work / f"out-{runtime}.mp4")),
        ):
            s = predict(spec, inputs, out, runtime=runtime, progress=False, predictor=predictor)
            rows.append((kind, s.runtime if runtime != "auto" else f"auto -> {s.runtime}", s.fps, s.model_fps,
                         s.frames))  # fmt: skip
            print(
                f"{kind:22s} {rows[-1][1]:34s} {s.fps:7.1f} FPS end to end {s.model_fps:7.1f} FPS model only"
            )
    first = np.asarray(Image.open(frames[0]).convert("RGB"))
    post = time_postprocess(predictor, first, work / "post-cache", args.postprocess_runs)
    for k, v in post.items():
        print(f"{v:8.2f} ms  {k}")
    md = [
        f"End-to-end `effseg predict` at {size[0]}x{size[1]}, batch 1, model {name}, {args.frames} frames.",
        f"Machine: {header}; {torch.get_num_threads()} threads; OMP_WAIT_POLICY={omp}.",
        f"Command: `python benchmarks/bench_pipeline.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        "| input | runtime | end-to-end FPS | model-only FPS | frames |",
        "|---|---|---:|---:|---:|",
        *[f"| {k} | {r} | {fps:.1f} | {mfps:.1f} | {n} |" for k, r, fps, mfps, n in rows],
        "",
        "Final upsample + argmax alone (median ms per frame; the onnxruntime rows include the network):",
        "",
        "| method | ms |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in post.items()],
        "",
    ]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(md))
        print(f"wrote {args.out}")
    else:
        print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
