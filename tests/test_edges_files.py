"""Issue 25, files: atomic writes and the one rule for output failures (patched ``os`` functions,
so these run anywhere), damaged and non-finite weights refused at load, positive class weights,
bad images found before training and reported in one line from DataLoader workers."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effseg
from effseg import fileio
from effseg.cli import main as cli_main
from effseg.config import config_from_dict
from effseg.data import build_dataset
from effseg.data.base import SampleError, check_readable
from effseg.engine.checkpoint import load_checkpoint, save_checkpoint
from effseg.errors import CheckpointError, ConfigError, DataError, ExportError
from effseg.fileio import OutputError, atomic_path, atomic_write_bytes, describe_output_error
from helpers_disks import failing, folder_dataset, tiny_checkpoint

# ----------------------------------------------------------------------------- the one rule


class _FullFile:
    """A file object whose writes fail like a full disk."""

    def __init__(self, f) -> None:
        self.f = f

    def write(self, _data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_full_disk_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "eval.json"
    path.write_text("good")
    monkeypatch.setattr(fileio, "open", lambda p, mode="r": _FullFile(open(p, mode)), raising=False)  # noqa: SIM115
    with pytest.raises(OutputError) as err:
        atomic_write_bytes(path, b"new", "the evaluation results")
    assert str(err.value) == (
        f"{path}: cannot write the evaluation results: no space left on the device; free some space "
        "there or write somewhere else (the previous eval.json is intact)"
    )
    assert path.read_text() == "good" and os.listdir(tmp_path) == ["eval.json"]


@pytest.mark.parametrize(
    ("code", "reason", "advice"),
    [
        (errno.EROFS, "the file system is read-only", "choose a folder on a writable disk"),
        (errno.EACCES, "permission denied", "choose a folder you may write to"),
        (errno.EDQUOT, "no space left on the device", "free some space"),
    ],
)
def test_each_errno_is_one_line_with_what_to_do(tmp_path: Path, monkeypatch, code, reason, advice) -> None:
    monkeypatch.setattr(fileio.os, "replace", failing(code))
    with pytest.raises(OutputError) as err, atomic_path(tmp_path / "m.onnx", "the ONNX export") as tmp:
        tmp.write_bytes(b"x")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'm.onnx'}: cannot write the ONNX export: {reason}; {advice}")
    assert "\n" not in msg and os.listdir(tmp_path) == []  # the temp file is gone


def test_a_path_through_a_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("a file")
    with pytest.raises(OutputError) as err:
        atomic_write_bytes(tmp_path / "notes" / "sub" / "x.png", b"x", "a predicted mask")
    assert str(err.value) == (
        f"{tmp_path / 'notes' / 'sub'}: cannot write a predicted mask there: it is a file, not a folder; "
        "choose another path"
    ) or "is a file, not a folder" in str(err.value)
    err2 = describe_output_error(tmp_path / "notes" / "x", "it", OSError(errno.ENOTDIR, "Not a directory"))
    assert f"{tmp_path / 'notes'} is a file, not a folder" in err2


def test_a_writer_failing_without_an_oserror_on_a_full_disk_gets_the_same_line(tmp_path, monkeypatch) -> None:
    """torch's and onnx's C++ writers raise RuntimeError on a full disk: the folder is examined."""
    monkeypatch.setattr(fileio, "_diagnose", lambda _path: errno.ENOSPC)
    with (
        pytest.raises(OutputError, match="no space left"),
        atomic_path(tmp_path / "m.pt", "the TorchScript export"),
    ):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    with pytest.raises(ValueError):  # an ordinary bug is not disguised when the disk is fine
        monkeypatch.setattr(fileio, "_diagnose", lambda _path: None)
        with atomic_path(tmp_path / "m.pt", "x"):
            raise ValueError("a bug")


def test_checkpoint_on_a_read_only_folder_is_one_line_and_keeps_the_old(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1})
    monkeypatch.setattr(fileio.tempfile, "mkstemp", failing(errno.EROFS))
    with pytest.raises(CheckpointError, match="cannot write the checkpoint: the file system is read-only"):
        save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~mask


def test_cli_turns_a_stray_oserror_into_one_line(monkeypatch, capsys) -> None:
    import effseg.cli.export as export_cli

    def boom(_args):
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x.json")

    monkeypatch.setattr(export_cli, "run", boom)
    assert cli_main(["export", "m.pt", "--out", "x.onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "effseg: error: /mnt/ro/x.json: the file system is read-only; choose a folder on a writable disk"
    )


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_everywhere(tmp_path: Path, capsys, bad: float) -> None:
    path = tiny_checkpoint(tmp_path / "nan.pt", bad=bad)
    with pytest.raises(CheckpointError) as err:
        effseg.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: weight backbone.") and "holds NaN or infinite values" in msg
    assert "use an earlier checkpoint or train again" in msg and "\n" not in msg
    (tmp_path / "p.png").write_bytes(b"")
    for argv in (
        ["eval", str(path)],
        ["predict", str(path), str(tmp_path / "p.png"), "--out", str(tmp_path / "o")],
        ["export", str(path), "--out", str(tmp_path / "m.onnx")],
    ):
        assert cli_main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [f"effseg: error: {msg}"], argv
    assert not (tmp_path / "m.onnx").exists()


def test_an_onnx_file_with_a_nan_weight_is_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from effseg.deploy.onnx_io import write_onnx_metadata

    w = np.zeros((3, 3, 1, 1), np.float32)
    w[1, 2] = np.nan
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "nan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    write_onnx_metadata(path, {"num_classes": 3, "mean": [0.5] * 3, "std": [0.25] * 3})
    with pytest.raises(ExportError, match=r"nan\.onnx: weight w holds NaN or infinite values"):
        effseg.load(path)


def test_export_parity_fails_on_nan_logits(tmp_path: Path) -> None:
    from effseg.deploy.export import check_finite_logits, export_torchscript

    good = torch.zeros(1, 3, 4, 4)
    check_finite_logits(good, good, "m.onnx")
    bad = good.clone()
    bad[0, 1, 2, 2] = float("nan")
    with pytest.raises(ExportError, match="PyTorch's logits hold 1 NaN or infinite values of 48"):
        check_finite_logits(bad, good, "m.onnx")
    with pytest.raises(ExportError, match="the exported graph's logits hold 1 NaN"):
        check_finite_logits(good, bad, "m.onnx")
    model = effseg.build_model("lraspp", backbone="mobilenetv3_small", num_classes=3, aux=False).eval()
    with torch.no_grad():
        next(p for p in model.parameters() if p.ndim == 4).fill_(float("nan"))
    out = tmp_path / "m.pt"
    out.write_bytes(b"the previous good export")
    with pytest.raises(ExportError, match="logits hold .* NaN or infinite values"):
        export_torchscript(model, out, (32, 32))
    assert out.read_bytes() == b"the previous good export" and os.listdir(tmp_path) == ["m.pt"]


# ----------------------------------------------------------------------------- messages


def test_checkpoint_messages_say_what_the_file_is(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("model:\n  name: pspnet\n")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(text)
    assert "not a PyTorch checkpoint but a text file (it starts with 'model:')" in str(err.value)
    assert "carries code" not in str(err.value)
    good = tiny_checkpoint(tmp_path / "good.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(cut)
    assert str(err.value) == (
        f"{cut}: not a readable PyTorch checkpoint: the file is truncated or damaged (an interrupted "
        "copy or write?)"
    )
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty"):
        load_checkpoint(empty)

    class Code:
        def __reduce__(self):
            return (os.getcwd, ())

    old = tmp_path / "old.pt"
    old.write_bytes(pickle.dumps({"model": Code()}, protocol=0))  # a text-like pickle that carries code
    with pytest.raises(CheckpointError, match=r"refused: the file carries code \(it would import and run"):
        load_checkpoint(old)


def test_negative_class_weights_are_refused() -> None:
    base = {"model": {"name": "fcn", "backbone": "resnet18", "num_classes": 3}}
    with pytest.raises(ConfigError) as err:
        config_from_dict({**base, "train": {"class_weights": [1.0, -2.0, 1.0]}})
    assert str(err.value) == (
        "key 'train.class_weights': expected positive numbers, one per class, got [1.0, -2.0, 1.0]"
    )
    with pytest.raises(ConfigError, match="positive numbers"):
        config_from_dict({**base, "train": {"class_weights": [1.0, 0.0, 1.0]}})
    assert config_from_dict({**base, "train": {"class_weights": [1.0, 0.5, 2.0]}}).train.class_weights


# ----------------------------------------------------------------------------- bad images


def test_a_corrupt_image_in_a_dataloader_worker_is_one_line(tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "data", 4)
    bad = root / "images" / "train" / "s2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build_dataset("folder", root, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1)
    with pytest.raises(SampleError) as err:
        for _ in loader:
            pass
    msg = str(err.value)
    assert msg.startswith(f"{bad}: cannot decode image (") and msg.endswith(
        "the file is corrupt or truncated"
    )
    assert "\n" not in msg and "Traceback" not in msg and "worker" not in msg
    with pytest.raises(SampleError, match="s2.png: cannot decode image"):  # the same line without workers
        ds[2]


def test_val_images_are_checked_from_their_headers(tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "data", 4)
    check_readable(build_dataset("folder", root, "val"))
    png = root / "images" / "val" / "s1.png"
    png.write_bytes(png.read_bytes()[:-40])  # cut short: the header still reads
    with pytest.raises(DataError) as err:
        check_readable(build_dataset("folder", root, "val"))
    assert str(err.value) == (
        f"{png}: cannot decode image (the file ends before its PNG end marker); the file is corrupt or "
        "truncated"
    )
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(png)
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(root / "masks" / "val" / "s3.png")
    with pytest.raises(DataError, match=r"s3.png is 32x24 but its label .*s3.png is 32x20"):
        check_readable(build_dataset("folder", root, "val"))


def test_training_stops_before_the_first_step_on_a_corrupt_val_image(tmp_path: Path, capsys) -> None:
    import yaml

    root = folder_dataset(tmp_path / "data", 4)
    (root / "images" / "val" / "s0.png").write_bytes(b"not an image at all")
    cfg = {
        "model": {"name": "lraspp", "backbone": "mobilenetv3_small", "num_classes": 3, "aux": False},
        "data": {"dataset": "folder", "root": str(root), "crop_size": "32x24", "num_workers": 0},
        "train": {"iterations": 2, "batch_size": 2, "device": "cpu", "tensorboard": False},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert cli_main(["train", str(path), "--run-dir", str(run)]) == 2
    out = capsys.readouterr()
    assert out.err.strip().splitlines() == [
        f"effseg: error: {root / 'images' / 'val' / 's0.png'}: cannot decode image (cannot identify image "
        f"file '{root / 'images' / 'val' / 's0.png'}'); the file is corrupt or truncated"
    ]
    assert not (run / "last.pt").exists() and "iteration" not in out.out


@pytest.mark.parametrize("name", ["camvid", "cityscapes", "folder", "synthetic"])
def test_a_root_that_is_a_file_is_not_a_directory(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root.txt"
    root.write_text("a file, not a dataset")
    with pytest.raises(DataError) as err:
        build_dataset(name, root, "train")
    assert f"root {root} is a file, not a directory" in str(err.value)
    assert "does not exist" not in str(err.value) and root.read_text() == "a file, not a dataset"
