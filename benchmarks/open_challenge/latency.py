"""Interleaved CPU latency of several models at one input size (batch 1, eval, inference mode).

Same method as ``effseg.bench.measure`` (warm-up calls, then the median of N timed calls with
``effseg.bench.timing.time_call``), but the models are timed *interleaved* (one call of each
in turn, N rounds), so on a machine shared with other jobs a slow spell hits every model
alike and their ratios stay honest.  Each model is a config YAML, checkpoint / run folder
or a name like ``lraspp_mobilenetv3_large_os16`` (resolved by ``effseg.bench.measure.resolve_model``).

    python benchmarks/open_challenge/latency.py pspnet_mobilenetv2 lraspp_mobilenetv3_large_os16 \
        --input-size 1024x512 --threads 2 --runs 15 --json out.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from effseg.bench.measure import resolve_model
from effseg.bench.models_table import count_flops, count_params
from effseg.bench.timing import latency_stats, time_call
from effseg.size import parse_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--input-size", default="1024x512", help="WxH")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    h, w = parse_size(a.input_size, "--input-size")
    x = torch.randn(1, 3, h, w)
    models = {spec: resolve_model(spec).model.eval() for spec in a.models}
    times: dict[str, list[float]] = {spec: [] for spec in models}
    with torch.inference_mode():
        for _ in range(a.warmup):
            for m in models.values():
                m(x)
        for _ in range(a.runs):
            for spec, m in models.items():
                times[spec].append(time_call(lambda m=m: m(x)))
    rows = []
    for spec, m in models.items():
        st = latency_stats(times[spec])
        fl = count_flops(m, x)
        params = count_params(m)["params_total_m"]
        rows.append({"model": spec, "params_m": params, **fl, **st})
        print(
            f"{spec:55s} {params:6.2f} M  {fl['gflops']:7.2f} GFLOPs  "
            f"median {st['latency_ms_median']:8.1f} ms  p90 {st['latency_ms_p90']:8.1f} ms"
        )
    info = {
        "input_size": a.input_size,
        "threads": a.threads,
        "warmup": a.warmup,
        "runs": a.runs,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "rows": rows,
    }
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
