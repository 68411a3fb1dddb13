"""Cityscapes loader: layout discovery, the official label table, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effseg.data import build_dataset
from effseg.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    CityscapesDataset,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from effseg.errors import DataError, EffsegError

H, W = 64, 128

# cityscapesScripts helpers/labels.py: label id -> train id (every other id of 0..33 is 255)
EXPECTED_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                     24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
EXPECTED_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                    "truck", "bus", "train", "motorcycle", "bicycle"]  # fmt: skip
EXPECTED_PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
                    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)]  # fmt: skip


def all_ids_label() -> np.ndarray:
    """A 64x128 label-id image holding every id 0..33 in vertical stripes."""
    return (np.arange(W)[None, :].repeat(H, 0) % 34).astype(np.uint8)


def write_pair(
    root: Path, split: str, city: str, n: int, label: np.ndarray | None = None
) -> tuple[Path, Path]:
    img_dir, lab_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{city}_000000_{n:06d}"
    rng = np.random.default_rng(n)
    img = img_dir / f"{stem}_leftImg8bit.png"
    lab = lab_dir / f"{stem}_gtFine_labelIds.png"
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img)
    Image.fromarray(all_ids_label() if label is None else label).save(lab)
    return img, lab


@pytest.fixture
def city(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    write_pair(root, "train", "aachen", 19)
    write_pair(root, "train", "aachen", 20)
    write_pair(root, "train", "bremen", 5)
    write_pair(root, "val", "lindau", 1)
    return root


def test_counts_classes_and_sample_order(city: Path) -> None:
    ds = build_dataset("cityscapes", city, "train")
    assert isinstance(ds, CityscapesDataset)
    assert len(ds) == 3 and len(build_dataset("cityscapes", city, "val")) == 1
    assert [p.parent.name for p, _ in ds.samples] == ["aachen", "aachen", "bremen"]
    assert all(lab.name.endswith("_gtFine_labelIds.png") for _, lab in ds.samples)
    assert ds.classes == EXPECTED_CLASSES and ds.num_classes == 19 and ds.ignore_index == 255
    image, label = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert label.shape == (H, W) and label.dtype == torch.int64


def test_every_label_id_maps_as_in_cityscapes_scripts(city: Path) -> None:
    ids = np.arange(34)
    expected = np.array([EXPECTED_TRAIN_ID.get(i, 255) for i in ids])
    np.testing.assert_array_equal(label_ids_to_train_ids(ids.astype(np.uint8)), expected)
    np.testing.assert_array_equal(label_ids_to_train_ids(ids.astype(np.int32)), expected)
    assert label_ids_to_train_ids(np.array([-1]))[0] == 255  # license plate
    # through a file, too
    _, label = build_dataset("cityscapes", city, "train").load_raw(0)
    np.testing.assert_array_equal(label, expected[all_ids_label()])


def test_palette_and_names_match_labels_py() -> None:
    assert CITYSCAPES_CLASSES == EXPECTED_CLASSES
    assert CITYSCAPES_PALETTE.dtype == np.uint8 and CITYSCAPES_PALETTE.shape == (19, 3)
    assert [tuple(c) for c in CITYSCAPES_PALETTE.tolist()] == EXPECTED_PALETTE


def test_train_id_label_id_round_trip() -> None:
    train = np.arange(19, dtype=np.uint8)
    label_ids = train_ids_to_label_ids(train)
    np.testing.assert_array_equal(label_ids, sorted(EXPECTED_TRAIN_ID))
    np.testing.assert_array_equal(label_ids_to_train_ids(label_ids), train)
    assert train_ids_to_label_ids(np.array([255]))[0] == 0  # ignore -> unlabeled
    grid = np.random.default_rng(0).integers(0, 19, (8, 8))
    np.testing.assert_array_equal(label_ids_to_train_ids(train_ids_to_label_ids(grid)), grid)
    with pytest.raises(DataError, match=r"\[19\]"):
        train_ids_to_label_ids(np.array([19]))


def test_train_id_files_are_preferred(city: Path) -> None:
    lab_dir = city / "gtFine" / "train" / "aachen"
    trainids = np.full((H, W), 255, np.uint8)
    trainids[:, :10] = 13
    Image.fromarray(trainids).save(lab_dir / "aachen_000000_000019_gtFine_labelTrainIds.png")
    ds = build_dataset("cityscapes", city, "train")
    assert ds.samples[0][1].name.endswith("_labelTrainIds.png")
    np.testing.assert_array_equal(ds.load_raw(0)[1], trainids)


def test_split_list_selects_subset(city: Path, tmp_path: Path) -> None:
    lst = tmp_path / "subset.txt"
    lst.write_text(
        "# two of three\n"
        "leftImg8bit/train/bremen/bremen_000000_000005_leftImg8bit.png gtFine/...\n"
        "aachen_000000_000020\n"
    )
    ds = build_dataset("cityscapes", city, "train", split_file=lst)
    assert [p.name for p, _ in ds.samples] == [
        "bremen_000000_000005_leftImg8bit.png",
        "aachen_000000_000020_leftImg8bit.png",
    ]


def test_resize_is_bilinear_image_nearest_label(city: Path) -> None:
    ds = build_dataset("cityscapes", city, "train", resize="64x32")
    image, label = ds.load_raw(0)
    assert image.shape == (32, 64, 3) and label.shape == (32, 64)
    assert set(np.unique(label).tolist()) <= set(EXPECTED_TRAIN_ID.values()) | {255}


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, EffsegError)
    return msg


def test_missing_root_names_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        build_dataset("cityscapes", tmp_path / "nope", "train")
    msg = one_line(err)
    assert str(tmp_path / "nope") in msg and "leftImg8bit/<split>/<city>" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no folder leftImg8bit/train"):
        build_dataset("cityscapes", tmp_path / "empty", "train")


def test_image_without_label(city: Path) -> None:
    (city / "gtFine/train/bremen/bremen_000000_000005_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError) as err:
        build_dataset("cityscapes", city, "train")
    assert "bremen_000000_000005_leftImg8bit.png has no label" in one_line(err)


def test_label_without_image(city: Path) -> None:
    (city / "leftImg8bit/train/bremen/bremen_000000_000005_leftImg8bit.png").unlink()
    with pytest.raises(DataError) as err:
        build_dataset("cityscapes", city, "train")
    assert "bremen_000000_000005_gtFine_labelIds.png has no image" in one_line(err)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_png(city: Path, damage: str) -> None:
    img = city / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    data = img.read_bytes()
    img.write_bytes(b"not a png at all" if damage == "garbage" else data[: len(data) // 2])
    ds = build_dataset("cityscapes", city, "train")
    with pytest.raises(DataError) as err:
        ds[0]
    msg = one_line(err)
    assert str(img) in msg and "corrupt or truncated" in msg


def test_size_mismatch(city: Path) -> None:
    lab = city / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(lab)
    with pytest.raises(DataError) as err:
        build_dataset("cityscapes", city, "train").load_raw(0)
    msg = one_line(err)
    assert "128x64" in msg and "64x32" in msg and str(lab) in msg


def test_label_values_outside_mapping(city: Path) -> None:
    bad = all_ids_label()
    bad[0, 0] = 40
    lab = city / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    Image.fromarray(bad).save(lab)
    with pytest.raises(DataError) as err:
        build_dataset("cityscapes", city, "train").load_raw(0)
    msg = one_line(err)
    assert "[40]" in msg and str(lab) in msg
    # 16-bit label files are read without wrapping: 300 is reported, not taken as 44
    Image.fromarray(np.full((H, W), 300, np.uint16)).save(lab)
    with pytest.raises(DataError, match=r"\[300\] are not Cityscapes label ids"):
        build_dataset("cityscapes", city, "train").load_raw(0)
    # an RGB image is not a label map
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(lab)
    with pytest.raises(DataError, match="expected a single-channel PNG"):
        build_dataset("cityscapes", city, "train").load_raw(0)
    # train-id files: 19 is out of range
    tid = city / "gtFine/train/bremen/bremen_000000_000005_gtFine_labelTrainIds.png"
    Image.fromarray(np.full((H, W), 19, np.uint8)).save(tid)
    with pytest.raises(DataError, match=r"\[19\] are outside the class range 0..18"):
        build_dataset("cityscapes", city, "train").load_raw(2)


def test_empty_split(city: Path) -> None:
    (city / "leftImg8bit/test").mkdir()
    (city / "gtFine/test").mkdir()
    with pytest.raises(DataError) as err:
        build_dataset("cityscapes", city, "test")
    assert "'test'" in one_line(err) and "empty" in str(err.value)


def test_split_list_naming_missing_file(city: Path, tmp_path: Path) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text("aachen_000000_000019\naachen_000000_999999\n")
    with pytest.raises(DataError) as err:
        build_dataset("cityscapes", city, "train", split_file=lst)
    msg = one_line(err)
    assert "line 2" in msg and "aachen_000000_999999" in msg
    with pytest.raises(DataError, match="file not found"):
        build_dataset("cityscapes", city, "train", split_file=tmp_path / "missing.txt")


def test_unknown_dataset_or_option(city: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'kitti'"):
        build_dataset("kitti", city, "train")
    with pytest.raises(DataError, match="no option 'crop'"):
        build_dataset("cityscapes", city, "train", crop=3)
