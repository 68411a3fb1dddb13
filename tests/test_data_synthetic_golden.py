"""The synthetic city is bit-identical for a seed: hashes computed on the 1,321-line
``synthetic.py`` before it became the ``effseg.data.synthetic`` package (commit 6268c05),
hard-coded here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from effseg.data.synthetic import forced_classes, generate_city, render_scene, write_scene
from effseg.size import Size


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_render_scene_with_forced_rare_classes_is_unchanged() -> None:
    assert forced_classes(0) == ("wall", "fence", "terrain")
    image, label = render_scene([0, 1, 0], Size(h=128, w=256), forced_classes(0))
    assert digest(image, label) == "4112b596ea58d9d9eb843be7fbc2ebc77813005af28a14b661d75a46ef6d7f6e"


def test_render_scene_plain_seed_is_unchanged() -> None:
    image, label = render_scene(7, "160x96")
    assert image.shape == (96, 160, 3) and label.shape == (96, 160)
    assert digest(image, label) == "43250661d9805ae180ca1a1eb69d3f27be8eddb8fb90fb86e60cf2213196333f"


def test_generated_city_files_are_unchanged(tmp_path: Path) -> None:
    out = generate_city(tmp_path / "city", 2, 1, "128x64", seed=3, workers=1)
    files = sorted(out.rglob("*.png"))
    assert len(files) == 6
    arrays = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in files]
    assert digest(*arrays) == "8ee8bf5165729aa4a85bfde815129dea3f6ab957209d63acf0e2c73c26d93f04"
    # write_scene (the public single-scene writer) gives the same files as generate_city
    image, label = write_scene(tmp_path / "one", "val", 0, Size(h=64, w=128), seed=3)
    assert image.relative_to(tmp_path / "one") in {p.relative_to(out) for p in files}
    assert image.read_bytes() == (out / image.relative_to(tmp_path / "one")).read_bytes()
    assert label.read_bytes() == (out / label.relative_to(tmp_path / "one")).read_bytes()
