"""``effseg configs``: the training configs shipped with effseg; train one by name.

effseg configs                 # every name, e.g. camvid/cpu_40min
effseg configs camvid          # only names containing "camvid"
effseg configs --path camvid/lraspp_mbv3    # where the file is (to copy and edit it)
effseg train camvid/lraspp_mbv3 --set data.root=/data/CamVid
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filter", nargs="?", default="", help="show only names containing this text")
    parser.add_argument("--path", metavar="NAME", help="print the file of the config NAME and exit")


def run(args: argparse.Namespace) -> int:
    from effseg.zoo.configs import configs_dir, find_config, list_configs

    if args.path:
        print(find_config(args.path))
        return 0
    names = [n for n in list_configs() if args.filter in n]
    for name in names:
        print(name)
    if not names:
        print(f"no shipped config matches {args.filter!r} (folder: {configs_dir()})")
    return 0
