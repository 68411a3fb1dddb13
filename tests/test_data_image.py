"""effseg.data.image: the one reader (8/16-bit, modes, arrays) and decompression bombs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from effseg.cli import main
from effseg.data import build_dataset
from effseg.data.image import IMAGE_SUFFIXES, read_image, read_label
from effseg.errors import DataError


def pattern(h: int = 12, w: int = 16) -> np.ndarray:
    """A ``uint8 (h, w, 3)`` image using the whole 0..255 range."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 17) % 256, (yy * 23) % 256, (xx * yy * 7 + 255) % 256], -1).astype(np.uint8)


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A 60-byte PNG whose header declares ``width x height`` 8-bit RGB pixels (no real data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_16bit_grey_png_reads_as_the_8bit_image_scaled(tmp_path: Path) -> None:
    grey8 = pattern()[:, :, 0]
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    got = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(got, np.repeat(grey8[:, :, None], 3, axis=2))
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    np.testing.assert_array_equal(got, read_image(tmp_path / "g8.png"))


def test_16bit_rgb_png_reads_as_the_8bit_image_scaled(tmp_path: Path) -> None:
    rgb8 = pattern()
    rgb16 = rgb8.astype(np.uint16) * 257
    rgb16[0, 0] = (200, 40000, 65535)  # values Pillow's 8-bit truncation (v >> 8) gets wrong: 0, 156, 255
    assert cv2.imwrite(str(tmp_path / "c16.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    expected = rgb8.copy()
    expected[0, 0] = (1, 156, 255)  # round(v * 255 / 65535)
    np.testing.assert_array_equal(read_image(tmp_path / "c16.png"), expected)


def test_16bit_images_train_like_their_8bit_copy(tmp_path: Path) -> None:
    """The dataset path (load_raw) scales too: before, convert("RGB") clipped 16-bit images to white."""
    rgb8 = pattern(24, 32)
    for sub in ("a", "b"):
        (tmp_path / sub / "images").mkdir(parents=True)
        (tmp_path / sub / "masks").mkdir()
        (tmp_path / sub / "classes.yaml").write_text("names: [x, y]\n")
        Image.fromarray((np.arange(24 * 32).reshape(24, 32) % 2).astype(np.uint8)).save(
            tmp_path / sub / "masks" / "p.png"
        )
    Image.fromarray(rgb8).save(tmp_path / "a" / "images" / "p.png")
    rgb16 = cv2.cvtColor(rgb8.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "b" / "images" / "p.png"), rgb16)
    a = build_dataset("folder", tmp_path / "a", "all").load_raw(0)[0]
    b = build_dataset("folder", tmp_path / "b", "all").load_raw(0)[0]
    np.testing.assert_array_equal(a, rgb8)
    np.testing.assert_array_equal(b, a)


def test_modes_and_arrays(tmp_path: Path) -> None:
    rgb = pattern()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    pal = Image.fromarray(rgb).quantize(colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    np.testing.assert_array_equal(read_image(rgb[:, :, 1]), np.repeat(rgb[:, :, 1:2], 3, axis=2))
    np.testing.assert_array_equal(read_image(rgb.astype(np.uint16) * 257), rgb)
    np.testing.assert_array_equal(read_image(Image.fromarray(rgb)), rgb)
    with pytest.raises(DataError, match=r"dtype float32; expected uint8"):
        read_image(rgb.astype(np.float32))
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "missing.png")
    assert ".ppm" in IMAGE_SUFFIXES and ".jpg" in IMAGE_SUFFIXES
    assert len(set(IMAGE_SUFFIXES)) == len(IMAGE_SUFFIXES)


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (10000, 10000)])  # Pillow's error; its warning
def test_decompression_bomb_is_one_line_naming_file_and_size(tmp_path: Path, width: int, height: int) -> None:
    path = bomb_png(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 100
    for reader in (read_image, read_label):
        with pytest.raises(DataError) as err:
            reader(path)
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and f"{width}x{height}" in msg
        assert "decompression bomb" in msg


def test_data_info_on_a_bomb_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.yaml").write_text("names: [x, y]\n")
    bomb_png(tmp_path / "images" / "p.png", 30000, 30000)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "p.png")
    assert main(["data", "info", str(tmp_path), "--dataset", "folder", "--split", "all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("effseg: error: ") and "30000x30000" in err[0]
    assert str(tmp_path / "images" / "p.png") in err[0]
