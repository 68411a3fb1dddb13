"""Check that effseg computes an official checkpoint's function (reference: :mod:`.reference`).

    python -m effseg.models.official FILE --model pidnet_s [--size 1024x512] [--image street.jpg]

Reads FILE (``torch.load(weights_only=True)``), converts it to effseg's names
(:func:`effseg.models.official.convert_official`), builds the effseg model with the official
options and the file's number of classes, loads every tensor (strict), and compares its eval-mode
logits with the official function computed from the file alone
(:func:`effseg.models.official.reference.reference_forward`) on a random batch (or ``--image``).
Prints the largest logit difference and the argmax agreement; exits 1 below ``--min-agreement``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from effseg.errors import EffsegError, ModelError
from effseg.models.official import (
    OFFICIAL_SOURCES,
    convert_official,
    is_official_layout,
    official_options,
    unwrap_official,
)
from effseg.models.official.reference import reference_forward


def compare(name: str, state: dict, x: torch.Tensor) -> tuple[float, float]:
    """``(max |effseg - official| logit difference, argmax agreement)`` on the batch ``x``."""
    from effseg.models import build_model

    if not is_official_layout(name, state):
        raise ModelError(
            f"not an official {name} checkpoint ({OFFICIAL_SOURCES[name]}): its names do not match"
        )
    converted = convert_official(name, state)
    heads = ("final_layer.cls.weight", "head.cls.weight", "decoder.classifier.weight")
    cls = next((k for k in converted.state if k in heads), None)
    if cls is None:
        raise ModelError(
            f"an official {name} file without its classifier (an ImageNet/backbone file): nothing to compare"
        )
    num_classes = int(converted.state[cls].shape[0])
    aux = any(k.startswith(("aux_head.", "p_head.", "aux2.")) for k in converted.state)
    model = build_model(name, num_classes=num_classes, aux=aux, **official_options(name, converted))
    own = model.state_dict()
    bad = sorted(set(own) ^ set(converted.state)) + [
        k for k in own if k in converted.state and own[k].shape != converted.state[k].shape
    ]
    if bad:
        raise ModelError(f"the file does not fit effseg's {name} ({len(bad)} tensors differ, e.g. {bad[0]})")
    model.load_state_dict(converted.state, strict=True)
    model.eval()
    with torch.no_grad():
        ours = model(x)
    ref = reference_forward(name, unwrap_official(state), x)
    return float((ours - ref).abs().max()), float((ours.argmax(1) == ref.argmax(1)).float().mean())


def main(argv: list[str] | None = None) -> int:
    from effseg.models.pretrained import read_state_dict
    from effseg.size import parse_size

    parser = argparse.ArgumentParser(
        prog="python -m effseg.models.official", description=__doc__.split("\n")[0]
    )
    parser.add_argument("file", help="an official checkpoint (.pt / .pth / .pth.tar)")
    parser.add_argument("--model", required=True, choices=sorted(OFFICIAL_SOURCES))
    parser.add_argument(
        "--size", default="512x256", help="WIDTHxHEIGHT of the random batch (multiples of 64)"
    )
    parser.add_argument("--image", help="an image instead of random input (resized to --size)")
    parser.add_argument("--min-agreement", type=float, default=0.999)
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size, "--size")
        state = read_state_dict(args.file)
        if args.image:
            import cv2

            from effseg.data.image import read_image
            from effseg.data.transforms import build_eval_transform

            img = cv2.resize(read_image(args.image), size.wh, interpolation=cv2.INTER_LINEAR)
            x = build_eval_transform()(img, img[..., 0])[0][None]
        else:
            x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
        diff, agree = compare(args.model, state, x)
    except EffsegError as err:
        print(f"effseg: error: {err}", file=sys.stderr)
        return 2
    print(
        f"{args.file}: {args.model} ({OFFICIAL_SOURCES[args.model]}) at {size}: max |logit difference| "
        f"{diff:.2e}, argmax agreement {agree * 100:.3f}%"
    )
    return 0 if agree >= args.min_agreement else 1


if __name__ == "__main__":
    sys.exit(main())
