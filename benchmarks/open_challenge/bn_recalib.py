"""Is a run's mIoU held back by stale BatchNorm running statistics?

Loads a run (``effseg.engine.checkpoint.load_model``), scores it on the val set, then
re-estimates every BatchNorm's running mean/variance as the plain average over ``--batches``
training batches (same crops and augmentation as training; ``momentum=None`` = cumulative
average, "precise BN"), with the weights untouched, and scores it again.  In training mode
BatchNorm normalises with the batch statistics, so its momentum never changes the weights or
gradients, only these running buffers: the gap between the two scores is exactly what a too
small momentum (torchvision's MobileNetV3 uses 0.01) costs at evaluation.

    python benchmarks/open_challenge/bn_recalib.py runs/oc/lraspp_mbv3_large_project --batches 30
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
from torch.utils.data import DataLoader

from effseg.config import config_from_dict
from effseg.data.from_config import build_datasets
from effseg.engine.batchnorm import recompute_batchnorm_stats
from effseg.engine.checkpoint import load_model
from effseg.engine.evaluate import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--json", help="append the result (one JSON line) here")
    a = p.parse_args()
    torch.manual_seed(0)
    model, meta = load_model(a.run)
    cfg = config_from_dict(meta["config"])
    train_set, val_set = build_datasets(cfg)
    before = evaluate(model, val_set, progress=False)["miou"]
    loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True)
    recompute_batchnorm_stats(model, (images for images, _ in itertools.islice(loader, a.batches)))
    model.eval()
    after = evaluate(model, val_set, progress=False)["miou"]
    result = {"run": a.run, "miou": before * 100, "miou_precise_bn": after * 100, "batches": a.batches}
    print(json.dumps(result))
    if a.json:
        with open(a.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
