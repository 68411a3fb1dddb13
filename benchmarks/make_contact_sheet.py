"""Regenerate docs/synthetic_city.png: a few synthetic scenes beside their colour labels.

    python benchmarks/make_contact_sheet.py [--out docs/synthetic_city.png] [--n 4] [--seed 0]

The scenes are the first train images of ``effseg data synth --seed SEED --size 1024x512``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effseg.data.synthetic import contact_sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "docs" / "synthetic_city.png"
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="1024x512")
    args = parser.parse_args(argv)
    print(contact_sheet(args.out, n=args.n, size=args.size, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
