"""The models the benchmark scripts measure: one list, read from effseg's shipped-config registry.

Every architecture among the shipped Cityscapes configs (``effseg configs cityscapes``), once
(configs that differ only in training settings -- distillation, recipe variants -- share an
architecture and are measured once, under the first name), cheapest first by GFLOPs at
1024x512, so that a run cut short still covers most models.

    from models import benchmark_configs      # benchmarks/ is the script folder on sys.path
    for path in benchmark_configs(): ...
"""

from __future__ import annotations

import json
from pathlib import Path


def benchmark_configs(dataset: str = "cityscapes") -> list[Path]:
    """The config files of the distinct architectures among the shipped ``dataset`` configs,
    cheapest first (GFLOPs counted on the ``meta`` device: no compute, no memory)."""
    import torch

    from effseg.bench.models_table import count_flops
    from effseg.config import load_config
    from effseg.models import build_model
    from effseg.zoo.configs import find_config, list_configs

    seen: dict[str, tuple[float, Path]] = {}
    for name in list_configs():
        if not name.startswith(f"{dataset}/") or name.count("/") != 1:
            continue
        path = find_config(name)
        kwargs = load_config(path).model.build_kwargs()
        key = json.dumps(kwargs, sort_keys=True, default=str)
        if key in seen:
            continue
        with torch.device("meta"):
            model = build_model(**{**kwargs, "aux": False}).eval()
        seen[key] = (count_flops(model, (512, 1024))["gflops"], path)
    return [path for _, path in sorted(seen.values(), key=lambda fp: (fp[0], fp[1].stem))]


def benchmark_names(dataset: str = "cityscapes") -> list[str]:
    """The config stems of :func:`benchmark_configs`, e.g. ``["lraspp_mbv3", "pspnet_mbv2", ...]``."""
    return [p.stem for p in benchmark_configs(dataset)]
