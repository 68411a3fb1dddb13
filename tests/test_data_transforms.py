"""Joint transforms: image and label stay aligned, labels are never interpolated."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from effseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_train_transform,
    denormalize,
)
from effseg.errors import DataError

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def coded_pair(h: int = 64, w: int = 96, block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A left-right asymmetric label of square blocks and an image encoding it (pixel = 10 * label)."""
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 19, (h // block, w // block))
    label = np.kron(blocks, np.ones((block, block), np.int64)).astype(np.uint8)
    label[:, :block] = 0  # makes the pattern certainly asymmetric
    label[:, -block:] = 18
    image = np.repeat((label * 10)[..., None], 3, axis=2).astype(np.uint8)
    return image, label


def decode(image: torch.Tensor) -> np.ndarray:
    """Undo mean 0 / std 1 normalisation and the *10 code."""
    return np.round(image[0].numpy() * 255.0 / 10.0).astype(np.int64)


def test_flip_applies_to_image_and_label_together() -> None:
    image, label = coded_pair()
    t = build_train_transform(crop_size=label.shape, scale_range=(1.0, 1.0), jitter=False, mean=ZERO, std=ONE)
    seen = set()
    for _ in range(24):
        x, y = t(image, label)
        y = y.numpy()
        np.testing.assert_array_equal(decode(x), y)  # a one-sided flip breaks this everywhere
        if np.array_equal(y, label):
            seen.add("same")
        elif np.array_equal(y, label[:, ::-1]):
            seen.add("flipped")
        else:
            raise AssertionError("label changed by more than a flip")
    assert seen == {"same", "flipped"}


def test_scale_crop_keep_alignment_and_never_interpolate_labels() -> None:
    image, label = coded_pair(96, 128, block=16)
    t = build_train_transform(crop_size=(48, 48), scale_range=(0.5, 2.0), jitter=False, mean=ZERO, std=ONE)
    allowed = set(np.unique(label).tolist()) | {255}
    checked = 0
    for _ in range(30):
        x, y = t(image, label)
        assert x.shape == (3, 48, 48) and y.shape == (48, 48)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        y = y.numpy()
        assert set(np.unique(y).tolist()) <= allowed
        # away from block edges (where the image is bilinearly blended, and where cv2's nearest
        # and bilinear sampling grids differ by up to one source pixel) the code matches the label
        code = decode(x)
        interior = np.ones_like(y, bool)
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                interior &= np.roll(y, (dy, dx), (0, 1)) == y
        interior[:3, :] = interior[-3:, :] = interior[:, :3] = interior[:, -3:] = False
        valid = interior & (y != 255)
        np.testing.assert_array_equal(code[valid], y[valid])
        checked += valid.sum()
    assert checked > 30 * 48 * 48 * 0.1


def test_padding_fills_image_zero_and_label_ignore() -> None:
    image, label = coded_pair(16, 16)
    t = build_train_transform(crop_size=(40, 40), scale_range=(1.0, 1.0), hflip=False, jitter=False)
    x, y = t(image, label)
    assert x.shape == (3, 40, 40)
    pad = y.numpy() == 255
    assert pad.sum() == 40 * 40 - 16 * 16
    expected = (0.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x.numpy()[:, pad].mean(axis=1), expected, atol=1e-4)


def test_eval_transform_normalises_and_resizes_nearest() -> None:
    image = np.full((20, 30, 3), 255, np.uint8)
    label = np.zeros((20, 30), np.uint8)
    label[:, 15:] = 7
    x, y = build_eval_transform()(image, label)
    assert x.shape == (3, 20, 30)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), (1 - np.array(IMAGENET_MEAN)) / IMAGENET_STD, rtol=1e-5)
    np.testing.assert_array_equal(y.numpy(), label)
    x, y = build_eval_transform(resize=(10, 45))(image, label)
    assert x.shape == (3, 10, 45) and y.shape == (10, 45)
    assert set(np.unique(y.numpy()).tolist()) == {0, 7}


def test_jitter_changes_image_not_label_and_denormalize() -> None:
    image, label = coded_pair()
    t = build_train_transform(crop_size=label.shape, scale_range=(1.0, 1.0), hflip=False, jitter=True)
    x, y = t(image, label)
    np.testing.assert_array_equal(y.numpy(), label)
    back = denormalize(build_eval_transform()(image, label)[0])
    assert np.abs(back.astype(int) - image).max() <= 1


def test_blur_softens_image_not_label_and_is_checked() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    label = rng.integers(0, 11, (48, 64), dtype=np.uint8)
    kw = dict(crop_size=(48, 64), scale_range=(1.0, 1.0), hflip=False, jitter=False, mean=ZERO, std=ONE)
    x0, y0 = build_train_transform(**kw)(image, label)
    np.testing.assert_allclose(x0.numpy(), image.transpose(2, 0, 1) / 255.0, atol=1e-6)  # blur 0: untouched
    blurred = build_train_transform(blur=1.0, **kw)
    for seed in range(4):  # Gaussian or motion, whichever is drawn: noise loses its edges
        blurred.set_random_seed(seed)
        x, y = blurred(image, label)
        np.testing.assert_array_equal(y.numpy(), label)
        edges = lambda t: t.diff(dim=1).abs().mean() + t.diff(dim=2).abs().mean()  # noqa: E731
        assert edges(x) < 0.7 * edges(x0)
    for bad in (-0.1, 1.5):
        with pytest.raises(DataError, match=r"^blur .*probability in \[0, 1\]$"):
            build_train_transform(blur=bad)


def test_transforms_pickle_for_dataloader_workers() -> None:
    image, label = coded_pair()
    t = pickle.loads(pickle.dumps(build_train_transform(crop_size=(32, 32))))
    x, y = t(image, label)
    assert x.shape == (3, 32, 32)


def test_bad_sizes() -> None:
    with pytest.raises(DataError, match="crop_size"):
        build_train_transform(crop_size=(0, 10))
    with pytest.raises(DataError, match="scale_range"):
        build_train_transform(scale_range=(2.0, 1.0))


def test_set_random_seed_reproduces_augmentation() -> None:
    image, label = coded_pair()
    t = build_train_transform(crop_size=(32, 48))
    t.set_random_seed(7)
    a = t(image, label)
    t.set_random_seed(7)
    b = t(image, label)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
