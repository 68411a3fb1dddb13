"""`effseg data synth | prepare-cityscapes | info` end to end on tiny images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effseg.cli import main
from effseg.data import build_dataset


def test_synth_info_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    sheet = tmp_path / "sheet.png"
    argv = [
        "data",
        "synth",
        "--out",
        str(out),
        "--train",
        "3",
        "--val",
        "1",
        "--size",
        "128x64",
        "--workers",
        "1",
    ]
    assert main([*argv, "--contact-sheet", str(sheet)]) == 0
    assert len(list((out / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))) == 3
    assert len(list((out / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))) == 1
    assert Image.open(sheet).size[0] > 300

    assert main(["data", "info", str(out), "--dataset", "cityscapes", "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "3 images" in text and "road" in text and "bicycle" in text

    half = tmp_path / "half"
    assert (
        main(["data", "prepare-cityscapes", str(out), "--out", str(half), "--scale", "0.5", "--workers", "1"])
        == 0
    )
    assert "4 pairs written, 0 already there" in capsys.readouterr().out
    labels = sorted((half / "gtFine").rglob("*_gtFine_labelTrainIds.png"))
    assert len(labels) == 4 and not list(half.rglob("*.tmp"))
    assert Image.open(labels[0]).size == (64, 32)
    # the downscaled labels are the nearest-neighbour train ids of the originals
    full = build_dataset("cityscapes", out, "train")
    small = build_dataset("cityscapes", half, "train")
    _, big = full.load_raw(0)
    _, lab = small.load_raw(0)
    assert set(np.unique(lab).tolist()) <= set(np.unique(big).tolist())
    # resumable: a second run writes nothing; a deleted file is redone
    labels[0].unlink()
    assert main(["data", "prepare-cityscapes", str(out), "--out", str(half), "--workers", "1"]) == 0
    assert "1 pairs written, 3 already there" in capsys.readouterr().out


def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", str(tmp_path / "missing"), "--dataset", "camvid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effseg: error: CamVid root") and "\n" not in err
    assert main(["data", "prepare-cityscapes", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no folder leftImg8bit" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--size", "12", "--train", "1"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
