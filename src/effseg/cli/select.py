"""``effseg select --max-ms MS | --min-fps FPS``: the most accurate shipped model within a budget.

Times every shipped model in every installed runtime on this machine (briefly; cached per
machine, model, runtime and size in ~/.cache/effseg/select or $EFFSEG_CACHE), prints the table
and names the most accurate model that fits, by its cross-drive mIoU (the figure that predicts
new streets); exit status 1 when none fits (the fastest is named).

    effseg select --max-ms 20
    effseg select --min-fps 30 --input-size 640x480 --runtimes eager,onnxruntime,onnxruntime-int8
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-ms", type=float, metavar="MS", help="latency budget per image (ms)")
    budget.add_argument("--min-fps", type=float, metavar="FPS", help="frames per second to sustain")
    parser.add_argument(
        "--input-size", default="480x360", metavar="WxH", help="the camera's frame size (default 480x360)"
    )
    parser.add_argument(
        "--runtimes",
        metavar="LIST",
        help="comma list of runtimes to time, as in effseg bench (default: the installed fp32 ones: "
        "eager, onnxruntime, openvino)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed calls per runtime (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--refresh", action="store_true", help="time again instead of reading the cache")


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from effseg.bench.select import select_models

    err = Console(stderr=True, soft_wrap=True)
    result = select_models(
        args.max_ms,
        args.min_fps,
        args.input_size,
        args.runtimes,
        warmup=args.warmup,
        runs=args.runs,
        refresh=args.refresh,
        log=lambda msg: err.print(f"effseg: {msg}", markup=False, highlight=False),
    )
    budget = result["budget_ms"]
    m = result["machine"]
    rows = result["rows"]
    cached = sum(r["cached"] for r in rows)
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"shipped models at {result['input_size']}: budget {budget:.1f} ms ({1000 / budget:.1f} fps)",
        caption=f"Timed here: {m['cpu']}, {m['threads']} threads; model only, batch 1, median ms "
        "(green: within the budget)"
        + (f"; {cached} of {len(rows)} timings from the cache (--refresh times again)" if cached else "")
        + ". mIoU in %: cross-drive = leave one drive out, mean of the folds (new streets); "
        "same-drive val = a street the model trained on; '-': not measured.",
    )
    widths = {"runtime": 11, "cross-drive": 11, "same-drive val": 10}
    for name in ("model", "runtime", "ms", "fps", "cross-drive", "same-drive val"):
        table.add_column(
            name,
            justify="left" if name in ("model", "runtime") else "right",
            no_wrap=name == "model",
            overflow="fold",
            min_width=widths.get(name),
        )
    for r in rows:
        if r["error"]:
            median = f"error: {r['error'][:60]}"
        else:
            style = "green" if r["median_ms"] is not None and r["median_ms"] <= budget else "red"
            median = f"[{style}]{_num(r['median_ms'], '.1f')}[/]"
        table.add_row(
            r["model"],
            r["runtime"],
            median,
            _num(r["fps"], ".1f"),
            _num(r["miou_crossdrive"], ".2f"),
            _num(r["miou_val"], ".2f"),
        )
    Console().print(table)
    pick, fastest = result["pick"], result["fastest"]
    if pick is not None:
        if pick["miou_crossdrive"] is not None:
            how = f"cross-drive mIoU {pick['miou_crossdrive']:.2f}"
        elif pick["miou_val"] is not None:
            how = "no model here has a cross-drive figure: ranked by same-drive val mIoU " + _num(
                pick["miou_val"], ".2f"
            )
        else:
            how = "no model here has a cross-drive or val figure: picked by speed alone"
        print(
            f"pick: {pick['model']} with --runtime {pick['runtime']}: {pick['median_ms']:.1f} ms "
            f"({pick['fps']:.1f} fps) at {result['input_size']}, {how}"
            + (" (int8: the mIoU is the fp32 figure)" if pick["runtime"].endswith("int8") else "")
        )
        return 0
    if fastest is None:
        print("no model could be timed here (see the errors in the table)")
        return 1
    print(
        f"none fits {budget:.1f} ms at {result['input_size']}; the fastest is {fastest['model']} with "
        f"--runtime {fastest['runtime']} at {fastest['median_ms']:.1f} ms ({fastest['fps']:.1f} fps)"
    )
    return 1
