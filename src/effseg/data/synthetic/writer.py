"""Public entry points: render a scene, write a synthetic city in the Cityscapes layout.

Each image has its own seed ``(seed, split, index)``, so the output does not depend on the
number of worker processes. Files::

    <out>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <out>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from effseg.data.base import run_parallel
from effseg.data.synthetic.labels import EGO_MARK, STATIC_MARK, forced_classes, label_ids
from effseg.data.synthetic.scene import make_scene
from effseg.errors import DataError
from effseg.fileio import atomic_write_bytes
from effseg.size import Size, read_old_size

SPLIT_CITIES = {"train": ("synthburg", "pixelhafen"), "val": ("renderstadt",), "test": ("noiseville",)}
SYNTH_OPTIONS = {"n_train", "n_val", "size", "seed", "workers"}
MARKER = "effseg_synthetic.json"
DEFAULT_N_TRAIN, DEFAULT_N_VAL, DEFAULT_SIZE = 48, 12, Size(h=256, w=512)


def render_scene(
    seed: int | Sequence[int], size: Size | str = "1024x512", force: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: ``(image uint8 (H, W, 3) RGB, label uint8 (H, W) train ids, 255 = void)``.

    ``size``: a :class:`Size` or ``"WIDTHxHEIGHT"`` text (a plain pair is the old ``(W, H)``).
    ``force``: rare classes that must appear (names from ``RARE_CLASSES``).
    """
    scene = make_scene(seed, read_old_size(size, "size", "wh"), force)
    label = scene.label.copy()
    label[(label == EGO_MARK) | (label == STATIC_MARK)] = 255
    return scene.image, label


def write_scene(
    out_dir: str | os.PathLike, split: str, index: int, size: Size | str = "1024x512", seed: int = 0
) -> tuple[Path, Path]:
    """Render scene ``index`` of ``split`` exactly as :func:`generate_city` does (seed
    ``(seed, split, index)``, three forced rare classes) and write its image and label-id PNGs
    under ``out_dir`` in the Cityscapes layout; returns ``(image path, label path)``."""
    return _job((int(seed), split, int(index), read_old_size(size, "size", "wh"), str(out_dir)))


def _job(args: tuple[int, str, int, Size, str]) -> tuple[Path, Path]:
    """``(seed, split, index, size, out_dir)`` -> the written ``(image, label)`` paths (a pool job)."""
    seed, split, index, size, out = args
    split_code = {"train": 1, "val": 2, "test": 3}.get(split, 9)
    scene = make_scene([seed, split_code, index], size, forced_classes(index))
    img_path, lab_path = _paths(Path(out), split, index)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(img_path, cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    _write_png(lab_path, label_ids(scene.label))
    return img_path, lab_path


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes(), "a synthetic scene")  # effseg.fileio: the one helper


def _paths(out: Path, split: str, index: int) -> tuple[Path, Path]:
    cities = SPLIT_CITIES.get(split, (split,))
    city = cities[index % len(cities)]
    seq, frame = index // len(cities), 19
    stem = f"{city}_{seq:06d}_{frame:06d}"
    return (
        out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        out / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
    )


def generate_city(
    out_dir: str | os.PathLike,
    n_train: int,
    n_val: int,
    size: Size | str = "1024x512",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write ``n_train`` + ``n_val`` synthetic street scenes of ``size`` in Cityscapes layout.

    ``size``: a :class:`Size` or ``"WIDTHxHEIGHT"`` text (a plain pair is the old ``(W, H)``).

    Labels are Cityscapes *label ids* (``_gtFine_labelIds.png``). Deterministic for a
    ``seed`` whatever ``workers`` is (default: up to ``os.cpu_count()`` processes for
    more than 8 images). Returns ``out_dir``.
    """
    w, h = read_old_size(size, "size", "wh").wh
    if w < 32 or h < 16:
        raise DataError(f"size {w}x{h}: too small for a street scene; use at least 32x16")
    if n_train < 0 or n_val < 0:
        raise DataError(f"image counts must be >= 0, got n_train={n_train}, n_val={n_val}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (int(seed), split, i, Size(h=h, w=w), str(out))
        for split, n in (("train", n_train), ("val", n_val))
        for i in range(n)
    ]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(jobs) > 8 else 1
    run_parallel(_job, jobs, workers, "synthesising city" if progress else None)
    meta = {
        "generator": "effseg.data.synthetic",
        "version": 1,
        "n_train": n_train,
        "n_val": n_val,
        "size": [w, h],
        "seed": int(seed),
    }
    (out / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def ensure_city(
    root: str | os.PathLike,
    n_train: int | None = None,
    n_val: int | None = None,
    size: Size | str | None = None,
    seed: int | None = None,
    workers: int | None = None,
) -> Path:
    """Generate a synthetic city into ``root`` unless one is there already.

    Generation goes to a temporary sibling folder renamed into place, so concurrent
    callers (e.g. DDP ranks) and interrupted runs never see a half-written city. An
    existing city generated with other explicitly requested options is an error.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(
            f"synthetic city root {root} is a file, not a directory; give a folder to generate it in"
        )
    asked = {
        "n_train": n_train,
        "n_val": n_val,
        "size": list(read_old_size(size, "size", "wh").wh) if size else None,  # marker: [W, H]
        "seed": seed,
    }
    marker = root / MARKER
    if marker.is_file():
        meta = json.loads(marker.read_text())
        for key, value in asked.items():
            if value is not None and meta.get(key) != value:
                raise DataError(
                    f"{root} holds a synthetic city with {key}={meta.get(key)!r}, not {value!r}; "
                    "use another root or delete it"
                )
        return root
    if (root / "leftImg8bit").is_dir():
        return root  # a Cityscapes-layout folder made elsewhere: use as is
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate_city(
            tmp,
            DEFAULT_N_TRAIN if n_train is None else n_train,
            DEFAULT_N_VAL if n_val is None else n_val,
            DEFAULT_SIZE if size is None else size,
            0 if seed is None else seed,
            workers,
        )
        try:
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()
            os.replace(tmp, root)
        except OSError:
            if not (root / MARKER).is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def contact_sheet(
    out_path: str | os.PathLike, n: int = 4, size: Size | str = "1024x512", seed: int = 0
) -> Path:
    """Save a PNG grid of ``n`` generated images beside their colour labels, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from effseg.data.base import colorize
    from effseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    fig, axes = plt.subplots(n, 2, figsize=(12, 3.1 * n + 1.0), squeeze=False)
    for i in range(n):
        image, label = render_scene([seed, 1, i], size, forced_classes(i))
        axes[i, 0].imshow(image)
        axes[i, 1].imshow(colorize(label, CITYSCAPES_PALETTE))
        for ax in axes[i]:
            ax.set_axis_off()
    axes[0, 0].set_title("synthetic image")
    axes[0, 1].set_title("label (Cityscapes colours, black = ignore)")
    handles = [
        Patch(color=np.asarray(c) / 255, label=name)
        for name, c in zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=10, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
