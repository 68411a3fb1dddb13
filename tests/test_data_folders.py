"""CamVid (SegNet layout) and image/mask folder datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effseg.data import build_dataset
from effseg.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE
from effseg.errors import DataError

H, W = 64, 128


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def camvid(tmp_path: Path) -> Path:
    root = tmp_path / "camvid"
    label = (np.arange(W)[None, :].repeat(H, 0) % 12).astype(np.uint8)  # 0..11
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(n):
            save(root / split / f"0001TP_{i:06d}.png", rgb(i))
            save(root / f"{split}annot" / f"0001TP_{i:06d}.png", label)
    return root


def test_camvid_counts_void_and_classes(camvid: Path) -> None:
    ds = build_dataset("camvid", camvid, "train")
    assert len(ds) == 3 and len(build_dataset("camvid", camvid, "val")) == 2
    assert len(build_dataset("camvid", camvid, "trainval")) == 5
    assert ds.num_classes == 11 and ds.classes[0] == "sky" and ds.classes[-1] == "bicyclist"
    assert CAMVID_CLASSES[3] == "road" and CAMVID_PALETTE[3].tolist() == [128, 64, 128]
    assert CAMVID_PALETTE[4].tolist() == [60, 40, 222] and CAMVID_PALETTE.shape == (11, 3)
    _, label = ds.load_raw(0)
    expected = np.arange(W) % 12
    expected[expected == 11] = 255
    np.testing.assert_array_equal(label[0], expected)
    x, y = ds[1]
    assert x.shape == (3, H, W) and y.shape == (H, W)


def test_camvid_bad_input(camvid: Path) -> None:
    bad = np.full((H, W), 12, np.uint8)
    save(camvid / "trainannot" / "0001TP_000000.png", bad)
    with pytest.raises(DataError, match=r"0001TP_000000.png: label values \[12\] are outside CamVid"):
        build_dataset("camvid", camvid, "train").load_raw(0)
    (camvid / "valannot" / "0001TP_000001.png").unlink()
    with pytest.raises(DataError, match="0001TP_000001.png has no label"):
        build_dataset("camvid", camvid, "val")
    save(camvid / "testannot" / "extra.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match="extra.png has no image"):
        build_dataset("camvid", camvid, "test")
    with pytest.raises(DataError, match="SegNet CamVid layout"):
        build_dataset("camvid", camvid.parent / "nope", "train")
    with pytest.raises(DataError, match="no folder foo/"):
        build_dataset("camvid", camvid, "foo")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "mine"
    mask = np.zeros((H, W), np.uint8)
    mask[:, 40:] = 1
    mask[:, 80:] = 2
    mask[:4] = 9  # ignore value of classes.yaml
    for i in range(4):
        save(root / "images" / f"img{i}.jpg" if i % 2 else root / "images" / f"img{i}.png", rgb(i))
        save(root / "masks" / f"img{i}.png", mask)
    (root / "classes.yaml").write_text(
        "names: [background, road, car]\ncolors: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]\nignore: 9\n"
    )
    (root / "val.txt").write_text("img1\nimg3.png\n")
    return root


def test_folder_dataset(folder: Path) -> None:
    ds = build_dataset("folder", folder, "all")
    assert len(ds) == 4 and ds.classes == ["background", "road", "car"]
    assert ds.palette.tolist() == [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
    _, label = ds.load_raw(0)
    assert (label[:4] == 255).all() and label[10, 0] == 0 and label[10, 50] == 1 and label[10, 100] == 2
    val = build_dataset("folder", folder, "val")
    assert [p.name for p, _ in val.samples] == ["img1.jpg", "img3.jpg"]
    assert ds[0][0].shape == (3, H, W)


def test_folder_split_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "f"
    for split in ("train", "val"):
        save(root / "images" / split / "a.png", rgb(0))
        save(root / "masks" / split / "a.png", np.zeros((H, W), np.uint8))
    (root / "classes.yaml").write_text("names: [a, b]\n")
    ds = build_dataset("folder", root, "train")
    assert len(ds) == 1 and ds.palette.shape == (2, 3)


def test_folder_bad_input(folder: Path) -> None:
    with pytest.raises(DataError, match="no split 'test'"):
        build_dataset("folder", folder, "test")
    (folder / "val.txt").write_text("img1\nimg7\n")
    with pytest.raises(DataError, match="line 2: no image/mask pair named 'img7'"):
        build_dataset("folder", folder, "val")
    save(folder / "masks" / "img0.png", np.full((H, W), 3, np.uint8))
    with pytest.raises(DataError, match=r"img0.png: mask values \[3\] are outside the classes 0..2"):
        build_dataset("folder", folder, "all").load_raw(0)
    (folder / "classes.yaml").write_text("names: [a, b]\ncolors: [[0, 0, 0]]\n")
    with pytest.raises(DataError, match="'colors' must hold 2"):
        build_dataset("folder", folder, "all")
    (folder / "classes.yaml").write_text("name: [a, b]\n")
    with pytest.raises(DataError, match="unknown key 'name'"):
        build_dataset("folder", folder, "all")
    (folder / "classes.yaml").unlink()
    with pytest.raises(DataError, match="classes.yaml: classes file not found"):
        build_dataset("folder", folder, "all")
    (folder / "masks" / "img2.png").unlink()
    with pytest.raises(DataError, match="folder dataset root .* has no images/"):
        build_dataset("folder", folder.parent, "all")
