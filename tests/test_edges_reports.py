"""Issue 25, the rest: reports and logs written atomically. Files that belong together (eval
outputs, the bench and demo reports) appear together or not at all, a failed command leaves no
empty folder, ``log.jsonl`` keeps whole lines and its readers skip a partial last line, and a
corrupt train image stops the training before its first step."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from effseg import fileio  # noqa: E402
from effseg.cli import main as cli_main  # noqa: E402
from effseg.fileio import OutputError, append_line, atomic_files, check_writable_dir  # noqa: E402
from helpers_disks import TINY_MODEL, failing, folder_dataset, one_error_line, tiny_checkpoint  # noqa: E402

FULL = "no space left on the device; free some space there or write somewhere else"


def _full_savefig(monkeypatch) -> None:
    """Every matplotlib figure fails to save like on a full disk."""
    monkeypatch.setattr(Figure, "savefig", failing(errno.ENOSPC))


def _figure() -> Figure:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


# ----------------------------------------------------------------------------- fileio


def test_files_written_together_appear_together_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "a.md").write_text("the earlier report")
    with atomic_files() as files:  # the good case: both replaced, no temporary file left
        files.write_text(out / "a.md", "new", "the report")
        files.savefig(_figure(), out / "b.png", "a figure")
    assert (out / "a.md").read_text() == "new" and (out / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(out)) == ["a.md", "b.png"]

    _full_savefig(monkeypatch)
    with pytest.raises(OutputError) as err, atomic_files() as files:
        files.write_text(out / "a.md", "newer", "the report")
        files.savefig(_figure(), out / "b.png", "a figure")
    assert str(err.value) == f"{out / 'b.png'}: cannot write a figure: {FULL} (the previous b.png is intact)"
    assert (out / "a.md").read_text() == "new"  # the text was fine, but it does not appear alone
    assert sorted(os.listdir(out)) == ["a.md", "b.png"]  # no temporary file
    assert plt.get_fignums() == []  # the figures were closed

    fresh = tmp_path / "new" / "sub"
    with pytest.raises(OutputError), atomic_files() as files:
        files.write_text(fresh / "a.md", "x", "the report")
        files.savefig(_figure(), fresh / "b.png", "a figure")
    assert not (tmp_path / "new").exists()  # the folders made for the files went with them


def test_check_writable_dir_leaves_no_folder(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a" / "b"
    assert check_writable_dir(target, "the results") == target
    assert os.listdir(tmp_path) == []
    (tmp_path / "keep").mkdir()
    check_writable_dir(tmp_path / "keep", "the results")
    assert os.listdir(tmp_path / "keep") == []  # an existing folder stays, without the probe file
    monkeypatch.setattr(fileio.tempfile, "mkstemp", failing(errno.EROFS))
    with pytest.raises(OutputError, match=r"/a/b: cannot write the results: the file system is read-only"):
        check_writable_dir(target, "the results")
    assert os.listdir(tmp_path) == ["keep"]


class _FillingFile:
    """A log file on a disk that fills up during a write: the first write stores half of its bytes,
    the next one fails with ENOSPC (as ``write(2)`` does)."""

    def __init__(self, f) -> None:
        self.f, self.calls = f, 0

    def write(self, data) -> int:
        self.calls += 1
        if self.calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(bytes(data[: len(data) // 2]))

    def __getattr__(self, name: str):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_a_log_line_cut_by_a_full_disk_is_removed(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "log.jsonl"
    append_line(log, json.dumps({"iteration": 1}), "the training log")
    real_open = open
    monkeypatch.setattr(
        fileio, "open", lambda p, mode, **kw: _FillingFile(real_open(p, mode, **kw)), raising=False
    )
    with pytest.raises(OutputError) as err:
        append_line(log, json.dumps({"iteration": 2, "loss": 0.5}), "the training log")
    assert str(err.value) == f"{log}: cannot write the training log: {FULL}"
    assert log.read_text() == '{"iteration": 1}\n'  # the half line was cut back


# ----------------------------------------------------------------------------- log.jsonl


def test_readers_skip_a_partial_last_line_and_a_resumed_run_removes_it(tmp_path: Path) -> None:
    from effseg.engine.runlog import RunLog, read_log

    log = tmp_path / "log.jsonl"
    records = [{"iteration": i, "loss": 1.0 / i} for i in (1, 2, 3)]
    whole = "".join(json.dumps(r) + "\n" for r in records)
    log.write_text(whole + '{"iteration": 4, "lo')  # a kill in the middle of a write
    assert read_log(log) == records
    assert read_log(tmp_path / "none.jsonl") == []
    RunLog(tmp_path, enabled=True, tensorboard=False, resume_iter=2).log({"iteration": 3, "x": 1}, "train")
    assert log.read_text() == "".join(json.dumps(r) + "\n" for r in [*records[:2], {"iteration": 3, "x": 1}])
    log.write_text(whole + '{"iteration": 4, "lo')  # opened again without a resume point: the same repair
    RunLog(tmp_path, enabled=True, tensorboard=False, resume_iter=None).log({"iteration": 4}, "train")
    assert read_log(log) == [*records, {"iteration": 4}] and log.read_text().endswith('{"iteration": 4}\n')
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]  # rewritten atomically, no temp left


# ----------------------------------------------------------------------------- eval


def test_a_failed_eval_leaves_no_eval_folder(tmp_path: Path, capsys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "m.pt", tmp_path / "no-such-data")
    assert cli_main(["eval", str(ckpt), "--device", "cpu"]) == 2
    assert "no-such-data" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no empty eval/ (it was left before)


def test_eval_outputs_are_replaced_together(tmp_path: Path, monkeypatch) -> None:
    from effseg.data import build_dataset, build_eval_transform
    from effseg.engine.evaluate import evaluate, write_eval_outputs
    from effseg.models import build_model

    data = folder_dataset(tmp_path / "data")
    result = evaluate(
        build_model(**TINY_MODEL),
        build_dataset("folder", data, "val", transform=build_eval_transform()),
        progress=False,
    )
    out = tmp_path / "eval"
    paths = write_eval_outputs(result, out)
    assert json.loads(paths["json"].read_text())["num_images"] == 3
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["confusion_matrix.png", "eval.json", "eval.md"]
    _full_savefig(monkeypatch)
    with pytest.raises(OutputError) as err:
        write_eval_outputs({**result, "num_images": 99}, out)
    assert str(err.value) == (
        f"{out / 'confusion_matrix.png'}: cannot write the confusion matrix: {FULL} (the previous "
        "confusion_matrix.png is intact)"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # eval.json not replaced alone
    with pytest.raises(OutputError):
        write_eval_outputs(result, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # no empty folder, no 0-byte eval.json


# ----------------------------------------------------------------------------- reports


def _bench_report() -> dict:
    row = {"model": "m", "runtime": "eager", "latency_ms_median": 10.0, "gflops": 1.0, "miou": 50.0}
    return {
        "machine": {"cpu_model": "cpu", "cores": 2, "versions": {}},
        "settings": {
            "input_size": [24, 32], "batch": 1, "device": "cpu", "dtype": "float32", "threads": 1,
            "warmup": 1, "runs": 2, "timing": "wall",
        },
        "flops_convention": "1 multiply-add = 2 FLOPs",
        "results": [row],
    }  # fmt: skip


def test_bench_report_keeps_the_earlier_report_when_the_plot_fails(tmp_path: Path, monkeypatch) -> None:
    from effseg.bench.report import write_report

    report = _bench_report()
    paths = write_report(report, tmp_path / "b")
    assert json.loads(paths["json"].read_text())["results"][0]["model"] == "m"
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    assert sorted(before) == ["bench.json", "bench.md", "pareto.png"]
    report["results"][0]["model"] = "changed"
    _full_savefig(monkeypatch)
    with pytest.raises(OutputError, match=r"pareto\.png: cannot write the Pareto plot: no space left"):
        write_report(report, tmp_path / "b")
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before


def test_bench_report_without_a_latency_writes_and_names_no_plot(tmp_path: Path) -> None:
    from effseg.bench.report import write_report

    report = _bench_report()
    report["results"] = [{"model": "m", "runtime": "eager", "error": "failed to build"}]
    paths = write_report(report, tmp_path / "b")
    assert sorted(paths) == ["json", "markdown"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bench.json", "bench.md"]


def test_demo_report_keeps_the_earlier_report_when_a_figure_fails(tmp_path: Path, monkeypatch) -> None:
    from effseg.app.demo_report import ModelResult, write_report

    results = [ModelResult("a", latency_ms=10.0, miou=40.0, confusion=np.eye(3, dtype=int))]
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    paths = write_report(tmp_path / "r", results, classes=["x", "y", "z"], palette=palette)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "confusion_a.png", "pareto.png", "report.html", "report.md",
    ]  # fmt: skip
    assert paths["html"].read_text().count("data:image/png;base64,iVBOR") == 2  # read from the temp files
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    _full_savefig(monkeypatch)
    with pytest.raises(OutputError, match="pareto.png: cannot write the Pareto plot: no space left"):
        write_report(tmp_path / "r", results, classes=["x", "y", "z"], palette=palette, title="new")
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before


def test_models_table_never_truncates_the_document(tmp_path: Path, monkeypatch) -> None:
    from effseg.bench.models_table import TABLE_END, TABLE_START, write_markdown

    doc = tmp_path / "README.md"
    text = f"# title\n\n{TABLE_START}\nold\n{TABLE_END}\n\nmore text\n"
    doc.write_text(text)
    rows = [{"head": "fcn", "backbone": "resnet18", "params": 1e6, "gflops": 2.0}]
    monkeypatch.setattr(fileio.os, "replace", failing(errno.EROFS))
    with pytest.raises(
        OutputError, match="README.md: cannot write the models table: the file system is read-only"
    ):
        write_markdown(doc, rows, "caption")
    assert doc.read_text() == text and os.listdir(tmp_path) == ["README.md"]
    monkeypatch.undo()
    write_markdown(doc, rows, "caption")
    assert "| fcn | resnet18 | 1.00 | 2.0 |" in doc.read_text() and doc.read_text().endswith("more text\n")


# ----------------------------------------------------------------------------- train images


def test_training_stops_before_the_first_step_on_a_corrupt_train_image(tmp_path: Path, capsys) -> None:
    data = folder_dataset(tmp_path / "data")
    bad = data / "images" / "train" / "s1.png"
    bad.write_bytes(bad.read_bytes()[:-40])  # cut short: the header still reads
    cfg = {
        "model": TINY_MODEL,
        "data": {"dataset": "folder", "root": str(data), "crop_size": "32x24", "num_workers": 0},
        "train": {"iterations": 2, "batch_size": 2, "device": "cpu", "tensorboard": False},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert cli_main(["train", str(tmp_path / "exp.yaml"), "--run-dir", str(run)]) == 2
    assert one_error_line(capsys) == (
        f"effseg: error: {bad}: cannot decode image (the file ends before its PNG end marker); the file "
        "is corrupt or truncated"
    )
    assert not run.exists()  # stopped before anything was written: no run folder left
