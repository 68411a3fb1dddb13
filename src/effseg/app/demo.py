"""``effseg demo``: no data, no GPU: synthetic city -> train two models -> evaluate -> benchmark -> report.

Every step goes through the same code a real experiment uses: the synthetic city is written
in the Cityscapes layout (:func:`effseg.data.synthetic.generate_city`), both models are trained
by :func:`effseg.engine.train.train` from the shipped ``configs/synthetic`` configs with
overrides, scored by :func:`effseg.engine.evaluate.evaluate`, timed by
:func:`effseg.bench.measure.bench_models`, run on validation images through
:func:`effseg.load`, and written up by :func:`effseg.app.demo_report.write_report`.

Layout of ``out_dir`` (default ``runs/demo``)::

    data/                       the synthetic city (Cityscapes layout)
    pspnet_mbv2/, pspnet_r18/   run folders (config.yaml, best.pt, last.pt, log.jsonl, tb/)
    report/                     report.md, report.html, results.json, PNG figures
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from effseg.app.street_demo import DEFAULT_MODEL, run_street_demo
from effseg.errors import ConfigError
from effseg.fileio import atomic_write_text


@dataclass(frozen=True)
class DemoBudget:
    """How much work the demo does. Sizes are ``(W, H)`` for images, ``(H, W)`` for crops."""

    n_train: int
    n_val: int
    image_size: tuple[int, int]  # (W, H) of the generated images
    crop_size: tuple[int, int]  # (H, W) training crops
    batch_size: int
    iterations: int  # the default when train_seconds is None
    bench_warmup: int
    bench_runs: int
    n_samples: int  # validation images in the prediction grid
    # Wall-clock seconds for training both models: the iterations (the same for both) are
    # set from a measured step time, within [min_iterations, max_iterations]. None = fixed.
    train_seconds: float | None = None
    # Re-estimate BatchNorm running statistics on the training images after training (see
    # effseg.engine.batchnorm.precise_batchnorm): a few dozen iterations are too few for the
    # running averages to settle.
    precise_bn: bool = True
    min_iterations: int = 12
    max_iterations: int = 150


# The full demo sizes its training to the machine: the two models get the same number of
# iterations, as many as fit in train_seconds (measured step times, see measure_step_seconds),
# so it ends within 10 minutes on a 2-core laptop and trains longer on a bigger machine.
# --quick is fixed (about a minute on 2 cores), so a test can check its outcome.
FULL = DemoBudget(
    n_train=48,
    n_val=12,
    image_size=(320, 160),
    crop_size=(128, 160),
    batch_size=8,
    iterations=60,
    bench_warmup=2,
    bench_runs=5,
    n_samples=4,
    train_seconds=300.0,
)
QUICK = DemoBudget(
    n_train=8,
    n_val=4,
    image_size=(128, 64),
    crop_size=(64, 96),
    batch_size=4,
    iterations=14,
    bench_warmup=1,
    bench_runs=2,
    n_samples=2,
)

# (display name, run folder, config file under configs/synthetic)
MODELS = (
    ("PSPNet-MobileNetV2", "pspnet_mbv2", "pspnet_mbv2.yaml"),
    ("PSPNet-ResNet18", "pspnet_r18", "pspnet_r18.yaml"),
)

# Used only when effseg is installed without its configs/ folder (a wheel): the model section
# of configs/synthetic/<name>; everything else the demo sets through overrides or defaults.
_FALLBACK_MODEL = {
    "pspnet_mbv2.yaml": {"head": "pspnet", "backbone": "mobilenetv2", "num_classes": 19, "output_stride": 8},
    "pspnet_r18.yaml": {"head": "pspnet", "backbone": "resnet18", "num_classes": 19, "output_stride": 8},
}


def find_config(name: str) -> Path | None:
    """``configs/synthetic/<name>`` of the source tree (or the current folder), if present."""
    here = Path(__file__).resolve()
    for root in (here.parents[3], here.parents[1], Path.cwd()):
        path = root / "configs" / "synthetic" / name
        if path.is_file():
            return path
    return None


def _overrides(budget: DemoBudget, data_root: Path, seed: int) -> list[str]:
    w, h = budget.image_size
    it = budget.iterations
    return [
        f"data.root={data_root.as_posix()}",
        f"data.options={{n_train: {budget.n_train}, n_val: {budget.n_val}, size: {w}x{h}, seed: {seed}}}",
        f"data.crop_size={budget.crop_size[1]}x{budget.crop_size[0]}",
        "data.num_workers=0",  # 2 cores: worker processes would only compete with the model for them
        f"train.iterations={it}",
        f"train.batch_size={budget.batch_size}",
        f"train.val_interval={it}",  # validate (and write best.pt) once, at the end
        f"train.checkpoint_interval={it}",
        f"train.log_interval={max(1, it // 10)}",
        "train.device=cpu",
        f"train.seed={seed}",
        "eval.num_workers=0",
    ]


def load_demo_config(config_name: str, overrides: list[str]):
    """The demo's config for one model: the shipped file plus ``overrides``."""
    from effseg.config import apply_overrides, config_from_dict, load_config

    path = find_config(config_name)
    if path is not None:
        return load_config(path, overrides)
    if config_name not in _FALLBACK_MODEL:
        raise ConfigError(f"demo config {config_name!r} not found under configs/synthetic")
    data = {"model": dict(_FALLBACK_MODEL[config_name]), "data": {"dataset": "synthetic"}}
    return config_from_dict(apply_overrides(data, overrides), source=f"demo:{config_name}")


def measure_step_seconds(cfg: Any, repeats: int = 2) -> float:
    """Wall seconds of one training step (forward, loss, backward, SGD) of ``cfg``'s model on
    random ``cfg.data.crop_size`` crops of ``cfg.train.batch_size``; one untimed warm-up step.

    A stand-in for the trainer's step (same model, loss, batch and crop; no data loading) used only
    to size the demo to the machine; the demo itself trains with :func:`effseg.engine.train.train`.
    The loss is the trainer's: :func:`~effseg.engine.losses.build_criterion` of the model's
    declared ``loss_terms`` under ``cfg.train``.
    """
    from effseg.engine.losses import build_criterion
    from effseg.models import build_model

    m = cfg.model
    model = build_model(**m.build_kwargs()).train()
    criterion = build_criterion(cfg.train, model.loss_terms)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    h, w = cfg.data.crop_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.train.batch_size, 3, h, w, generator=gen)
    y = torch.randint(0, m.num_classes, (cfg.train.batch_size, h, w), generator=gen)

    def step() -> None:
        loss, _ = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


def run_demo(
    out_dir: str | Path = "runs/demo",
    quick: bool = False,
    seed: int = 0,
    iterations: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the whole demo into ``out_dir``; returns the results dict also saved as
    ``report/results.json`` (mIoU and pixel accuracy in percent, latency in ms)."""
    from effseg.app.demo_report import ModelResult, Sample, write_report
    from effseg.bench.measure import bench_models
    from effseg.data.from_config import build_datasets
    from effseg.data.synthetic import MARKER, generate_city
    from effseg.deploy.artifact import run_folder_weights
    from effseg.engine.checkpoint import load_model
    from effseg.engine.evaluate import evaluate
    from effseg.engine.train import train

    console = console or Console()
    budget = QUICK if quick else FULL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "data"
    report_dir = out / "report"
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    steps = 2 + 3 * len(MODELS) + 2  # street photos, data, (train, eval, bench) per model, predict, report

    def step(i: int, text: str) -> None:
        console.rule(f"[bold]\\[{i}/{steps}] {text}", align="left")

    step(1, f"real street photos through the shipped model {DEFAULT_MODEL} -> {report_dir}")
    t0 = time.perf_counter()
    street = run_street_demo(report_dir, measure=not quick)
    timings["street_s"] = time.perf_counter() - t0
    for r in street.latency:
        shown = f"{r['median_ms']:.1f} ms" if not r.get("error") else f"failed: {r['error']}"
        console.print(f"{street.model} at 480x360, {r['runtime']}: {shown}")

    w, h = budget.image_size
    step(2, f"synthetic city: {budget.n_train} train + {budget.n_val} val images of {w}x{h} -> {data_root}")
    t0 = time.perf_counter()
    marker = data_root / MARKER
    wanted = {"n_train": budget.n_train, "n_val": budget.n_val, "size": [w, h], "seed": seed}
    if not (marker.is_file() and all(json.loads(marker.read_text()).get(k) == v for k, v in wanted.items())):
        generate_city(data_root, budget.n_train, budget.n_val, f"{w}x{h}", seed=seed, progress=True)
    timings["data_s"] = time.perf_counter() - t0

    if iterations is not None:
        if iterations < 1:
            raise ConfigError(f"--iterations {iterations}: expected a positive number")
        budget = replace(budget, iterations=int(iterations), train_seconds=None)
    elif budget.train_seconds is not None:
        configs = [load_demo_config(c, _overrides(budget, data_root, seed)) for _, _, c in MODELS]
        with console.status("measuring the training speed of this machine"):
            per_step = sum(measure_step_seconds(cfg) for cfg in configs) * 1.1  # + data loading
        n = int(min(max(budget.train_seconds / per_step, budget.min_iterations), budget.max_iterations))
        console.print(
            f"one training step of both models takes {per_step:.1f} s here: "
            f"{n} iterations each fit the {budget.train_seconds / 60:.0f}-minute training budget "
            "(--iterations N to fix it)"
        )
        budget = replace(budget, iterations=n)
        timings["calibrate_s"] = time.perf_counter() - t0 - timings["data_s"]

    overrides = _overrides(budget, data_root, seed)
    results: list[ModelResult] = []
    rows: list[dict[str, Any]] = []
    val_set = None
    classes: list[str] = []
    palette = np.zeros((0, 3), np.uint8)
    i = 2
    logged_miou: dict[str, float] = {}
    for name, run_name, config_name in MODELS:
        cfg = load_demo_config(config_name, overrides)
        run_dir = out / run_name
        i += 1
        step(
            i,
            f"train {name}: {budget.iterations} iterations of batch {budget.batch_size}, "
            f"crops {budget.crop_size[1]}x{budget.crop_size[0]} -> {run_dir}",
        )
        t0 = time.perf_counter()
        summary = train(cfg, run_dir, force=True)
        logged_miou[name] = float(summary["best_miou"]) * 100
        timings[f"train_{run_name}_s"] = time.perf_counter() - t0

        i += 1
        step(i, f"evaluate {name} on {budget.n_val} validation images")
        t0 = time.perf_counter()
        weights = run_folder_weights(run_dir)  # what effseg.load(run_dir) and the commands read
        if budget.precise_bn:
            from effseg.engine.batchnorm import precise_batchnorm

            n_bn = precise_batchnorm(weights, cfg)
            console.print(f"BatchNorm statistics re-estimated on {n_bn} training images ({weights.name})")
        model, meta = load_model(weights)
        if val_set is None:
            val_set = build_datasets(cfg)[1]
            classes, palette = list(val_set.classes), np.asarray(val_set.palette, np.uint8)
        ev = evaluate(model, val_set, progress=True)
        timings[f"eval_{run_name}_s"] = time.perf_counter() - t0

        i += 1
        step(i, f"benchmark {name}: batch 1, {w}x{h}, {budget.bench_runs} timed runs")
        t0 = time.perf_counter()
        bench = bench_models(
            [str(run_dir)],
            input_size=f"{w}x{h}",
            warmup=budget.bench_warmup,
            runs=budget.bench_runs,
            stages=False,
            progress=True,
        )
        b = bench["results"][0]
        timings[f"bench_{run_name}_s"] = time.perf_counter() - t0
        per_class = [ev["per_class"][c]["iou"] for c in ev["classes"]]
        result = ModelResult(
            name=name,
            params_m=b.get("params_m"),
            gflops=b.get("gflops"),
            latency_ms=b.get("latency_ms_median"),
            latency_p90_ms=b.get("latency_ms_p90"),
            miou=ev["miou"] * 100,
            pixel_acc=ev["pixel_acc"] * 100,
            iou_per_class=[None if v is None else v * 100 for v in per_class],
            confusion=np.asarray(ev["confusion_matrix"], dtype=np.int64),
        )
        results.append(result)
        rows.append(
            {
                "name": name,
                "run_dir": str(run_dir),
                "config": config_name,
                "params_m": result.params_m,
                "gflops": result.gflops,
                "latency_ms": result.latency_ms,
                "latency_p90_ms": result.latency_p90_ms,
                "miou": result.miou,
                "pixel_acc": result.pixel_acc,
                "mean_acc": ev["mean_acc"] * 100,
                "miou_per_10ms": result.miou_per_10ms,
                "final_loss": summary.get("final_loss"),
                "iou_per_class": dict(zip(ev["classes"], result.iou_per_class, strict=True)),
                "bench_machine": bench.get("machine"),
                "eval_rule": ev.get("miou_rule"),
            }
        )
        del model

    i += 1
    step(i, f"predict {budget.n_samples} validation images with both models")
    t0 = time.perf_counter()
    from effseg.api import load

    predictors = {name: load(out / run_name) for name, run_name, _ in MODELS}
    samples = []
    assert val_set is not None
    for k in range(min(budget.n_samples, len(val_set))):
        image, label = val_set.load_raw(k)
        preds = {name: p.predict(image) for name, p in predictors.items()}
        samples.append(
            Sample(name=Path(val_set.samples[k][0]).name, image=image, label=label, predictions=preds)
        )
    timings["predict_s"] = time.perf_counter() - t0

    i += 1
    step(i, f"report -> {report_dir}")
    t0 = time.perf_counter()
    majority = _majority_rate(results[0].confusion)
    notes = [
        f"Synthetic city (seed {seed}): {budget.n_train} train / {budget.n_val} val images of {w}x{h}, 19 "
        f"Cityscapes classes; both models trained from scratch (no ImageNet weights) for "
        f"{budget.iterations} iterations of batch {budget.batch_size} on {budget.crop_size[1]}x"
        f"{budget.crop_size[0]} crops on the CPU. Numbers from such a short run show the pipeline "
        "working, not what the models can reach (see the model zoo for Cityscapes results).",
        f"mIoU: {ev.get('miou_rule', 'mean IoU over classes present')}.",
        f"Pixel accuracy of always predicting the most frequent class: {majority * 100:.1f}%.",
        *(
            [
                "After training, the BatchNorm running statistics in last.pt were re-estimated over the "
                "training images (precise BN): after so few iterations the running averages lag the weights. "
                "So the table's mIoU differs from the training log's validation mIoU of the same "
                "checkpoint before the re-estimation: "
                + ", ".join(f"{n} {v:.2f}" for n, v in logged_miou.items())
                + "."
            ]
            if budget.precise_bn
            else []
        ),
        f"Latency: batch 1, {w}x{h}, eager PyTorch fp32 on {torch.get_num_threads()} CPU thread(s), "
        f"median of {budget.bench_runs} runs after {budget.bench_warmup} warm-up (a short measurement "
        "on a possibly busy machine; use effseg bench for careful numbers).",
    ]
    settings = {
        "command": f"effseg demo{' --quick' if quick else ''} --seed {seed} --iterations {budget.iterations}",
        "budget": json.dumps(asdict(budget)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **{k: f"{v:.1f}" for k, v in timings.items()},
    }
    paths = write_report(
        report_dir,
        results,
        classes=classes,
        palette=palette,
        samples=samples,
        title="effseg demo: PSPNet-MobileNetV2 vs PSPNet-ResNet18 on a synthetic city",
        notes=notes,
        settings=settings,
        street=street,
    )
    timings["report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    summary_out = {
        "quick": quick,
        "seed": seed,
        "budget": asdict(budget),
        "models": rows,
        "majority_pixel_acc": majority * 100,
        "timings_s": timings,
        "report": {k: str(v) for k, v in paths.items()},
    }
    atomic_write_text(
        report_dir / "results.json",
        json.dumps(summary_out, indent=1, default=_json_default) + "\n",
        "the demo's results",
    )
    _print_headline(console, results, paths, timings["total_s"])
    return summary_out


def _majority_rate(confusion: np.ndarray | None) -> float:
    """Pixel accuracy of always predicting the most frequent ground-truth class."""
    if confusion is None or confusion.sum() == 0:
        return float("nan")
    gt = confusion.sum(1)
    return float(gt.max() / gt.sum())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _print_headline(console: Console, results: list, paths: dict[str, Path], total_s: float) -> None:
    table = Table(title="effseg demo", title_justify="left")
    for col in ("model", "params (M)", "GFLOPs", "latency (ms)", "mIoU (%)", "pixel acc (%)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        table.add_row(
            r.name,
            f"{r.params_m:.2f}" if r.params_m else "-",
            f"{r.gflops:.2f}" if r.gflops else "-",
            f"{r.latency_ms:.1f}" if r.latency_ms else "-",
            f"{r.miou:.2f}",
            f"{r.pixel_acc:.2f}",
        )
    console.print(table)
    console.print(f"report: [bold]{paths['html']}[/bold]  (and {paths['md']})")
    console.print(f"total time: {total_s / 60:.1f} min")
