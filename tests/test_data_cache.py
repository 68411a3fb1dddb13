"""The optional in-memory dataset cache: same samples, no decoding after preload, shared by workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effseg.data import build_dataset, build_train_transform
from effseg.errors import DataError


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.yaml").write_text("names: [a, b, c]\n")
    for i in range(6):
        image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / "images" / f"s{i}.jpg")
        mask = rng.integers(0, 3, (24, 40), dtype=np.uint8)
        mask[0, :5] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"s{i}.png")
    return tmp_path


def test_cached_samples_are_identical_and_files_are_not_read_again(folder: Path) -> None:
    plain = build_dataset("folder", folder, "all", resize="20x12")
    cached = build_dataset("folder", folder, "all", resize="20x12", cache=True)
    expected = [plain.load_raw(i) for i in range(len(plain))]
    assert cached.cache_nbytes == 6 * (12 * 20 * 3 + 12 * 20) and plain.cache_nbytes == 0
    for p in folder.rglob("s*.*"):
        p.unlink()  # preloaded: nothing is decoded any more
    for i, (image, label) in enumerate(expected):
        got_image, got_label = cached.load_raw(i)
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_label, label)
        got_image[:] = 0  # a transform writing into its input cannot alter the cache
    np.testing.assert_array_equal(cached.load_raw(0)[0], expected[0][0])
    x, y = cached[3]
    assert x.shape == (3, 12, 20) and y.dtype == torch.int64 and int(y[0, 0]) == 255
    with pytest.raises(DataError, match="file not found"):
        plain.load_raw(0)


def test_same_augmented_samples_with_and_without_cache(folder: Path) -> None:
    pairs = []
    for cache in (False, True):
        transform = build_train_transform(crop_size=(16, 16), scale_range=(0.75, 1.5))
        transform.set_random_seed(7)
        ds = build_dataset("folder", folder, "all", transform=transform, cache=cache)
        pairs.append([ds[i % len(ds)] for i in range(10)])
    for (xa, ya), (xb, yb) in zip(*pairs, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_lazy_cache_fills_on_first_read(folder: Path) -> None:
    ds = build_dataset("folder", folder, "all")
    assert ds.enable_cache(preload=False) == 0
    first = ds.load_raw(2)
    assert ds.cache_nbytes == first[0].nbytes + first[1].nbytes
    (folder / "images" / "s2.jpg").unlink()
    np.testing.assert_array_equal(ds.load_raw(2)[0], first[0])


def test_preloaded_cache_works_with_dataloader_workers(folder: Path) -> None:
    plain = build_dataset("folder", folder, "all")
    cached = build_dataset("folder", folder, "all", cache=True)
    for p in (folder / "images").iterdir():
        p.unlink()  # workers must use the preloaded arrays, not the files
    loader = torch.utils.data.DataLoader(cached, batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 3
    assert sum(int(x.shape[0]) for x, _ in batches) == len(plain)
    labels = torch.cat([y for _, y in batches])
    for i in range(len(plain)):
        np.testing.assert_array_equal(labels[i].numpy(), cached.load_raw(i)[1])


def test_cache_option_is_checked(folder: Path) -> None:
    with pytest.raises(DataError, match=r"option 'cache': expected true or false, got 'yes'"):
        build_dataset("folder", folder, "all", cache="yes")
    with pytest.raises(DataError, match=r"valid options: cache, classes_file, drives, resize"):
        build_dataset("folder", folder, "all", cahce=True)
