"""Precise BatchNorm on a finished study row: the same weights, running statistics re-estimated
on CamVid train, scored again by ``effseg eval`` on val.

    python benchmarks/camvid/precise_bn.py runs/camvid_study/lraspp_mbv3_large_os16_bn_momentum_0.01

Copies the row's ``last.pt`` and ``config.yaml`` to ``<row>_precise_bn/``, re-estimates every
BatchNorm's mean and variance there as the plain average over the 367 train images
(:func:`effseg.engine.batchnorm.precise_batchnorm`; weights untouched) and evaluates it. Train
images only: the val figure stays honest.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from effseg.config import load_config
from effseg.engine.batchnorm import precise_batchnorm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("row", type=Path, help="a study row's run folder (last.pt, config.yaml)")
    args = ap.parse_args()
    out = args.row.with_name(args.row.name + "_precise_bn")
    out.mkdir(exist_ok=True)
    for name in ("last.pt", "config.yaml"):
        shutil.copy2(args.row / name, out / name)
    cfg = load_config(out / "config.yaml")
    n = precise_batchnorm(out / "last.pt", cfg)
    print(f"{out}: BatchNorm statistics re-estimated on {n} train images")
    subprocess.run(["effseg", "eval", str(out / "last.pt"), "--out", str(out / "eval")], check=True)


if __name__ == "__main__":
    main()
