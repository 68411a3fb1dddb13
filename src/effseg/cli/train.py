"""``effseg train CONFIG``: train a model from a YAML config (alone or under torchrun).

``CONFIG`` is a YAML file, a shipped config name (``camvid/cpu_40min``; list them with
``effseg configs``), or a run folder (its ``config.yaml`` is used and the run continues there
with ``--resume``). Default run folder: ``runs/<config stem>``.

    effseg train configs/cityscapes/pspnet_r18.yaml --set data.root=/data/cityscapes
    effseg train camvid/lraspp_mbv3 --set data.root=/data/CamVid
    effseg train configs/synthetic/pspnet_mbv2.yaml --resume
    effseg train mydata.yaml --init camvid-ddrnet23_slim        # fine-tune a shipped model
    torchrun --nproc-per-node 4 -m effseg train configs/cityscapes/pspnet_r50.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effseg.cli._options import add_set_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", metavar="CONFIG", help="YAML file, shipped config name (effseg configs), or a run folder"
    )
    add_set_option(parser, "train.lr=0.02 data.root=/data/cityscapes (values are YAML)")
    parser.add_argument(
        "--run-dir", help="output folder (default: runs/<config stem>, or CONFIG if a folder)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the run folder from last.pt (starts it if it has no checkpoint yet)",
    )
    group.add_argument("--force", action="store_true", help="delete an existing run folder and start over")
    parser.add_argument(
        "--init",
        metavar="WEIGHTS",
        help="start from trained weights (model.init): a shipped model (camvid-ddrnet23_slim), a run "
        "folder, a .pt, or an official checkpoint of the same network; classifiers for another number "
        "of classes start afresh",
    )


def resolve(config: str, run_dir: str | None) -> tuple[Path, Path]:
    """``(config file, run folder)`` for the CONFIG argument."""
    from effseg.errors import ConfigError

    path = Path(config)
    if path.is_dir():
        cfg_file = path / "config.yaml"
        if not cfg_file.is_file():
            raise ConfigError(f"{path} is a folder without config.yaml; expected a YAML file or a run folder")
        return cfg_file, Path(run_dir) if run_dir else path
    from effseg.zoo.configs import find_config  # a path as given, else a shipped config by name

    cfg_file = find_config(config)
    return cfg_file, Path(run_dir) if run_dir else Path("runs") / cfg_file.stem


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from effseg.config import load_config
    from effseg.engine.distributed import get_rank, rank_failure
    from effseg.engine.train import train
    from effseg.errors import EffsegError

    overrides = [item for group in args.overrides for item in group]
    try:
        cfg_file, run_dir = resolve(args.config, args.run_dir)
        cfg = load_config(cfg_file, overrides)
        if args.init:
            cfg.model.init = args.init
        summary = train(cfg, run_dir, resume=args.resume, force=args.force)
    except (EffsegError, dist.DistError) as err:  # under torchrun: one line per rank, not a traceback
        raise rank_failure(err) from None
    if get_rank() == 0:
        best = summary["best_miou"]
        best_txt = f"{best * 100:.2f}" if best is not None and best >= 0 else "-"
        print(
            f"done: {summary['iterations']} iterations in {summary['time_s']:.0f} s "
            f"({summary['train_time_s'] / 60:.2f} min of training), best mIoU {best_txt}; "
            f"checkpoints in {summary['run_dir']}"
        )
    return 0
