"""Issue 25 and 27 on real disks: train, eval, export and predict on a full or read-only tmpfs end
in one line, a non-zero exit and the earlier good files intact; predict's unusable ``--out``; an
export killed mid-write leaves the previous file as it was. (The tmpfs cases skip where this
process cannot mount; tests/test_edges_files.py covers the same rule with patched functions.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from effseg.cli import main as cli_main
from helpers_disks import TINY_MODEL, fill, folder_dataset, one_error_line, read_only, tiny_checkpoint, tmpfs
from helpers_engine import subprocess_env


@pytest.fixture()
def disk(tmp_path: Path):  # noqa: ANN201 - a fixture
    """An 8 MiB tmpfs at ``tmp_path/disk`` (prepare files, then :func:`fill` or :func:`read_only`)."""
    with tmpfs(tmp_path / "disk", 8192) as path:
        yield path


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """``(checkpoint, dataset root)`` outside the test disk."""
    data = folder_dataset(tmp_path / "data")
    return tiny_checkpoint(tmp_path / "m.pt", data), data


def _train_config(tmp_path: Path, data: Path) -> Path:
    cfg = {
        "model": TINY_MODEL,
        "data": {"dataset": "folder", "root": str(data), "crop_size": "32x24", "num_workers": 0},
        "train": {"iterations": 1, "batch_size": 2, "device": "cpu", "tensorboard": False},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ----------------------------------------------------------------------------- read-only


def test_read_only_disk_is_one_line_for_train_eval_export_predict(
    disk: Path, setup, tmp_path: Path, capsys
) -> None:
    ckpt, data = setup
    (disk / "runs" / "old").mkdir(parents=True)
    (disk / "runs" / "old" / "config.yaml").write_text("model: {}\n")
    (disk / "runs" / "old" / "last.pt").write_bytes(ckpt.read_bytes())
    (disk / "good.onnx").write_bytes(b"an earlier export")
    read_only(disk)
    cfg = str(_train_config(tmp_path, data))
    ro = "the file system is read-only; choose a folder on a writable disk"
    for argv, path in (
        (["train", cfg, "--run-dir", str(disk / "runs" / "new")], disk / "runs" / "new"),
        (["train", cfg, "--run-dir", str(disk / "runs" / "old"), "--force"], disk / "runs" / "old" / ".lock"),
        (
            ["train", cfg, "--run-dir", str(disk / "runs" / "old"), "--resume"],
            disk / "runs" / "old" / ".lock",
        ),
        (["eval", str(ckpt), "--out", str(disk / "eval")], disk / "eval"),
        (["eval", str(disk / "runs" / "old" / "last.pt")], disk / "runs" / "old" / "eval"),
        (
            ["export", str(ckpt), "--out", str(disk / "good.onnx")],
            f"{disk}: cannot write the export good.onnx",
        ),
        (["predict", str(ckpt), str(data / "images" / "val"), "--out", str(disk / "pred")], disk / "pred"),
    ):
        assert cli_main(argv) == 2, argv
        line = one_error_line(capsys)
        assert line.startswith(f"effseg: error: {path}") and ro in line, (argv, line)
    assert (disk / "good.onnx").read_bytes() == b"an earlier export"


# ----------------------------------------------------------------------------- full disk


def test_full_disk_train_lock_leaves_no_empty_lock(disk: Path, setup, tmp_path: Path, capsys) -> None:
    _, data = setup
    fill(disk)
    run = disk / "run"
    assert cli_main(["train", str(_train_config(tmp_path, data)), "--run-dir", str(run)]) == 2
    line = one_error_line(capsys)
    assert "no space left on the device" in line and "lock" in line
    assert not run.exists() or not [p.name for p in run.iterdir()]  # no (empty) .lock, no temp file


def test_full_disk_eval_leaves_no_empty_eval_json(disk: Path, setup, capsys) -> None:
    ckpt, _ = setup
    (disk / "eval").mkdir()
    (disk / "eval" / "eval.json").write_text('{"miou": 0.5}\n')  # an earlier result
    fill(disk)
    assert cli_main(["eval", str(ckpt), "--out", str(disk / "eval"), "--device", "cpu"]) == 2
    line = one_error_line(capsys)
    assert line == (
        f"effseg: error: {disk / 'eval' / 'eval.json'}: cannot write the evaluation results: no space left "
        "on the device; free some space there or write somewhere else (the previous eval.json is intact)"
    )
    assert (disk / "eval" / "eval.json").read_text() == '{"miou": 0.5}\n'
    assert sorted(p.name for p in (disk / "eval").iterdir()) == ["eval.json"]


def test_full_disk_predict_stops_with_a_count(disk: Path, setup, capsys) -> None:
    ckpt, data = setup
    fill(disk)
    out = disk / "pred"
    argv = ["predict", str(ckpt), str(data / "images" / "val"), "--out", str(out), "--runtime", "eager"]
    assert cli_main([*argv, "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "cannot write a predicted mask: no space left on the device" in line
    assert line.endswith(f"predict stopped after writing 0 of 3 frames' outputs in {out}")
    assert not [p for p in out.rglob("*") if p.is_file()]  # no half-written PNG


@pytest.mark.slow
def test_full_disk_exports_keep_the_previous_file_and_never_abort(disk: Path, setup, capsys) -> None:
    ckpt, _ = setup
    for name in ("m.onnx", "m.pt"):
        (disk / name).write_bytes(b"the previous good export")
    fill(disk)
    assert cli_main(["export", str(ckpt), "--input-size", "64x64", "--out", str(disk / "m.onnx")]) == 2
    lines = {"m.onnx": one_error_line(capsys)}
    # TorchScript in a child process: torch.jit.save's own writer used to abort the interpreter here
    done = subprocess.run(
        [sys.executable, "-m", "effseg", "export", str(ckpt), "--format", "torchscript",
         "--input-size", "64x64", "--out", str(disk / "m.pt")],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # not 134 (abort)
    lines["m.pt"] = done.stderr.strip().splitlines()[-1]
    for name, what in (("m.onnx", "the ONNX export"), ("m.pt", "the TorchScript export")):
        assert lines[name] == (
            f"effseg: error: {disk / name}: cannot write {what}: no space left on the device; free some "
            f"space there or write somewhere else (the previous {name} is intact)"
        )
        assert (disk / name).read_bytes() == b"the previous good export"
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "m.onnx", "m.pt"]


# ----------------------------------------------------------------------------- predict --out (issue 27)


def test_predict_out_that_is_a_file_or_an_existing_video(setup, tmp_path: Path, capsys) -> None:
    ckpt, data = setup
    images = str(data / "images" / "val")
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    assert cli_main(["predict", str(ckpt), images, "--out", str(file)]) == 2
    assert one_error_line(capsys) == (
        f"effseg: error: --out {file}: is a file, not a folder; give a folder for the PNGs, or a video file "
        "name ending in .avi, .m4v, .mkv, .mov, .mp4"
    )
    assert file.read_text() == "keep me"
    assert cli_main(["predict", str(ckpt), images, "--out", str(file / "sub")]) == 2
    assert (
        f"{file} is a file, not a folder" in one_error_line(capsys) or "is a file" in capsys.readouterr().err
    )
    video = tmp_path / "seg.mkv"
    video.write_bytes(b"an earlier video")
    argv = [
        "predict",
        str(ckpt),
        images,
        "--out",
        str(video),
        "--runtime",
        "eager",
        "--no-progress",
        "--fps",
        "5",
    ]
    assert cli_main(argv) == 2
    assert one_error_line(capsys) == (
        f"effseg: error: --out {video}: the video exists; add --overwrite to replace it, or choose another "
        "name"
    )
    assert video.read_bytes() == b"an earlier video"
    assert cli_main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    import cv2

    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and cap.read()[0]
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left


# ----------------------------------------------------------------------------- kill


@pytest.mark.slow
def test_export_killed_mid_write_leaves_the_previous_file(setup, tmp_path: Path) -> None:
    ckpt, _ = setup
    out = tmp_path / "k.onnx"
    out.write_bytes(b"the previous good export")
    proc = subprocess.Popen(
        [sys.executable, "-m", "effseg", "export", str(ckpt), "--input-size", "64x64", "--out", str(out)],
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            temps = [p for p in tmp_path.glob(".k.onnx.*.tmp.onnx") if p.stat().st_size > 0]
            if temps:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the export ended before it was caught writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_bytes() == b"the previous good export"
