"""The CamVid loader on real images from ../shared/camvid (train and val only, never test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effseg.data import build_dataset
from effseg.data.camvid import CAMVID_CLASSES
from effseg.size import Size

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "camvid"
if not (CAMVID / "train").is_dir():
    CAMVID = Path("/work/shared/camvid")

pytestmark = pytest.mark.skipif(
    not (CAMVID / "trainannot").is_dir() or not (CAMVID / "valannot").is_dir(),
    reason=f"CamVid train/val not found at {CAMVID} (the ../shared/camvid folder of a project checkout)",
)

# Label pixel counts measured on these files (void 11 -> 255); labels are lossless PNGs.
TRAIN_0 = ("0001TP_006690", {0: 23726, 1: 64726, 2: 1904, 3: 16139, 4: 11897, 5: 2303, 6: 2543, 8: 40851,
                             9: 731, 255: 7980})  # fmt: skip
VAL_0 = ("0016E5_07959", {0: 15008, 1: 52841, 2: 383, 3: 49063, 4: 15252, 5: 25472, 6: 716, 7: 4141, 8: 6054,
                          9: 912, 10: 2279, 255: 679})  # fmt: skip


def counts(label: np.ndarray) -> dict[int, int]:
    values, n = np.unique(label, return_counts=True)
    return dict(zip(values.tolist(), n.tolist(), strict=True))


@pytest.mark.parametrize(("split", "n", "first"), [("train", 367, TRAIN_0), ("val", 101, VAL_0)])
def test_real_pairs_ids_and_void(split: str, n: int, first: tuple[str, dict[int, int]]) -> None:
    ds = build_dataset("camvid", CAMVID, split)
    assert len(ds) == n and ds.classes == CAMVID_CLASSES and ds.num_classes == 11
    assert all(image.stem == label.stem for image, label in ds.samples)  # paired by file stem
    assert all(label.parent.name == f"{split}annot" for _, label in ds.samples)
    stem, expected = first
    assert ds.samples[0][0].stem == stem
    for i in (0, n // 2, n - 1):
        image, label = ds.load_raw(i)
        assert image.shape == (360, 480, 3) and image.dtype == np.uint8
        assert label.shape == (360, 480) and label.dtype == np.uint8
        raw = np.asarray(Image.open(ds.samples[i][1]))
        assert set(np.unique(raw).tolist()) <= set(range(12)) and (raw == 11).any()
        np.testing.assert_array_equal(label, np.where(raw == 11, 255, raw))  # ids 0..10 kept, void 11 -> 255
        assert 40 < float(image.mean()) < 220  # a photograph, not a blank or clipped image
    assert counts(ds.load_raw(0)[1]) == expected
    x, y = ds[0]
    assert tuple(x.shape) == (3, 360, 480) and int(y.max()) == 255 and int(y[y != 255].max()) <= 10


def test_resize_and_trainval() -> None:
    small = build_dataset("camvid", CAMVID, "val", resize="240x180")
    assert small.resize == Size(h=180, w=240)
    image, label = small.load_raw(0)
    assert image.shape == (180, 240, 3) and label.shape == (180, 240)
    assert set(np.unique(label).tolist()) <= set(range(11)) | {255}
    assert len(build_dataset("camvid", CAMVID, "trainval")) == 367 + 101
