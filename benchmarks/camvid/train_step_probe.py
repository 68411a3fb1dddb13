"""Training-step speed of one model on this CPU: images/s of forward + loss + backward + SGD step.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/camvid/train_step_probe.py ddrnet23_slim --mode bf16cl
    python benchmarks/camvid/train_step_probe.py pspnet --backbone mobilenetv2 --mode fp32cl

Random batch of ``--batch`` images of ``--size`` (WIDTHxHEIGHT, default 320x320), 11 classes,
cross-entropy on every segmentation output; ``--mode`` fp32 | fp32cl | bf16 | bf16cl (cl =
channels_last). Median of the steps after 2 warm-up steps. Run on a quiet machine (``uptime``).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import effseg
from effseg.size import parse_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a name of effseg.list_models()")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--output-stride", type=int, default=None)
    ap.add_argument("--mode", default="bf16cl", choices=["fp32", "fp32cl", "bf16", "bf16cl"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", default="320x320")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    kw = {k: v for k, v in (("backbone", args.backbone), ("output_stride", args.output_stride)) if v}
    model = effseg.build_model(args.model, num_classes=11, **kw).train()
    size = parse_size(args.size)
    x = torch.randn(args.batch, 3, size.h, size.w)
    y = torch.randint(0, 11, (args.batch, size.h, size.w))
    if args.mode.endswith("cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode.startswith("bf16")):
            out = model(x)
            loss = sum(F.cross_entropy(v.float(), y) for v in out.values() if v.shape[1] == 11)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    med = sorted(times[2:])[len(times[2:]) // 2]
    print(f"{args.model} {kw} {args.mode} batch {args.batch} {args.size}: {med * 1000:.0f} ms/step, "
          f"{args.batch / med:.2f} images/s on {torch.get_num_threads()} threads")  # fmt: skip


if __name__ == "__main__":
    main()
