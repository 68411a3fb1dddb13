"""Synthetic city: Cityscapes layout with label ids, determinism, class coverage, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effseg.data import build_dataset
from effseg.data.cityscapes import LABELS
from effseg.data.synthetic import MARKER, generate_city, render_scene
from effseg.errors import DataError, SizeError
from effseg.size import Size

SIZE = Size(h=128, w=256)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_city(tmp_path_factory.mktemp("synth") / "city", 3, 1, SIZE, seed=0, workers=1)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_cityscapes_layout_with_label_ids(city: Path) -> None:
    imgs = sorted((city / "leftImg8bit").rglob("*_leftImg8bit.png"))
    labs = sorted((city / "gtFine").rglob("*_gtFine_labelIds.png"))
    assert len(imgs) == len(labs) == 4
    assert {p.parent.parent.name for p in imgs} == {"train", "val"}
    assert len({p.parent.name for p in imgs if p.parent.parent.name == "train"}) == 2  # two cities
    lab = np.asarray(Image.open(labs[0]))
    assert lab.shape == SIZE and lab.dtype == np.uint8
    assert set(np.unique(lab).tolist()) <= {lab.id for lab in LABELS if lab.id >= 0}
    assert Image.open(imgs[0]).size == SIZE.wh and Image.open(imgs[0]).mode == "RGB"
    assert json.loads((city / MARKER).read_text())["seed"] == 0


def test_all_19_classes_occur_in_a_small_split(city: Path) -> None:
    ds = build_dataset("cityscapes", city, "train")
    present = set()
    for i in range(len(ds)):
        present |= set(np.unique(ds.load_raw(i)[1]).tolist())
    assert set(range(19)) <= present


def test_deterministic_per_seed_and_independent_of_workers(city: Path, tmp_path: Path) -> None:
    again = generate_city(tmp_path / "again", 3, 1, SIZE, seed=0, workers=2)
    assert files(again) == files(city)
    a, la = render_scene([1, 1, 0], "128x64")
    b, lb = render_scene([1, 1, 0], Size(h=64, w=128))
    c, _ = render_scene([2, 1, 0], "128x64")
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_scenes_are_not_separable_by_colour_alone(city: Path) -> None:
    """Road, sidewalk and terrain colours overlap: a per-pixel colour lookup must not solve them."""
    ds = build_dataset("cityscapes", city, "train")
    pixels = {0: [], 1: [], 9: []}
    for i in range(len(ds)):
        image, label = ds.load_raw(i)
        for k in pixels:
            pixels[k].append(image[label == k] // 32)  # coarse colour bins
    bins = {k: {tuple(c) for c in np.concatenate(v)} for k, v in pixels.items()}
    assert bins[0] & bins[1]  # some road and sidewalk pixels share a colour bin


def test_build_dataset_generates_once_and_checks_options(tmp_path: Path) -> None:
    root = tmp_path / "auto"
    ds = build_dataset("synthetic", root, "train", n_train=2, n_val=1, size="128x64")
    assert len(ds) == 2 and ds.load_raw(0)[0].shape == (64, 128, 3)
    assert len(build_dataset("synthetic", root, "val")) == 1
    stamp = (root / MARKER).stat().st_mtime_ns
    build_dataset("synthetic", root, "train", n_train=2)  # same options: reused, not regenerated
    assert (root / MARKER).stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="n_train=2, not 5"):
        build_dataset("synthetic", root, "train", n_train=5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_bad_generation_arguments(tmp_path: Path) -> None:
    with pytest.raises(SizeError, match="size 'big': expected WIDTHxHEIGHT"):
        generate_city(tmp_path / "x", 1, 0, "big")
    with pytest.raises(DataError, match="too small"):
        generate_city(tmp_path / "x", 1, 0, "8x8")


def test_old_width_height_pair_still_works_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, la = render_scene([3, 1, 0], (96, 48))  # the old (W, H) spelling
    b, lb = render_scene([3, 1, 0], "96x48")
    assert a.shape == (48, 96, 3) and np.array_equal(a, b) and np.array_equal(la, lb)
    assert "size: [96, 48] is the old (width, height) spelling; write 96x48" in capsys.readouterr().err
