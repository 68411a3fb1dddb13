"""Shipped models by name (a zoo fixture: EFFSEG_ZOO_DIR -> a temp folder) and shipped configs by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effseg
from effseg.cli import main
from effseg.config import load_config
from effseg.errors import ConfigError, ModelError
from effseg.size import Size
from effseg.zoo import ZOO_ENV, find_pretrained, list_pretrained
from effseg.zoo.configs import find_config, list_configs

CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "person", "bike"]
PALETTE = [[10 * i, 255 - 10 * i, 7 * i] for i in range(11)]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _camvid_root(root: Path, n: int = 2, size: tuple[int, int] = (24, 32)) -> Path:
    """A tiny CamVid-layout dataset: ``val/`` RGB images and ``valannot/`` labels 0..10 (11 = void)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / f"f{i}.png")
            label = rng.integers(0, 11, size, dtype=np.uint8)
            label[0, :] = 11
            Image.fromarray(label).save(root / f"{split}annot" / f"f{i}.png")
    return root


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A zoo folder with one tiny 11-class model, ``camvid-tiny``, trained on nothing."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(
        "model: {head: fcn, backbone: mobilenetv2, num_classes: 11, aux: false}\n"
        "data: {dataset: camvid, root: /nonexistent/camvid, num_workers: 0}\n"
        "eval: {num_workers: 0}\n"
    )
    cfg = load_config(cfg_file)
    model = effseg.build_model(**cfg.model.build_kwargs()).eval()
    folder = tmp_path / "zoo"
    folder.mkdir()
    ckpt = {
        "model": model.state_dict(),
        "model_config": model.config,
        "classes": CLASSES,
        "palette": PALETTE,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "config": cfg.to_dict(),
    }
    torch.save(ckpt, folder / "camvid-tiny.pt")
    (folder / "models.yaml").write_text(
        "models:\n"
        "  - {name: camvid-tiny, file: camvid-tiny.pt, dataset: camvid, classes: 11, miou_val: 12.5,\n"
        "     budget: 1 min, iterations: 7, input_size: 64x48, cpu_latency_ms: 3.25, machine: test box}\n"
    )
    monkeypatch.setenv(ZOO_ENV, str(folder))
    return {"folder": folder, "model": model, "ckpt": ckpt}


def test_registry_entries(zoo: dict) -> None:
    (entry,) = list_pretrained()
    assert entry.name == "camvid-tiny" and entry.path == zoo["folder"] / "camvid-tiny.pt"
    assert entry.size_hw == (48, 64) and entry.miou_val == 12.5 and entry.iterations == 7
    with pytest.raises(ModelError) as info:
        find_pretrained("camvid-huge")
    assert str(info.value) == "unknown shipped model 'camvid-huge'; known: camvid-tiny"


def test_load_by_name(zoo: dict) -> None:
    p = effseg.load("camvid-tiny")
    assert p.classes == CLASSES and p.palette.tolist() == PALETTE
    assert p.input_size == Size(h=48, w=64)  # the registry's WIDTHxHEIGHT: images are resized to it and back
    img = np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    out = p.predict(img)
    assert out.shape == (30, 40)
    # the same as running the model by hand at 64x48 with the checkpoint's normalisation
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(48, 64), mode="bilinear", antialias=True)
    with torch.no_grad():
        logits = zoo["model"]((x - 0.5) / 0.25)
    logits = torch.nn.functional.interpolate(logits, size=(30, 40), mode="bilinear")
    assert (out == logits.argmax(1)[0].numpy()).mean() > 0.99
    with pytest.raises(ModelError) as info:
        effseg.load("camvid-nope")
    assert str(info.value) == (
        "unknown shipped model 'camvid-nope' (and no file or folder of that name); known: camvid-tiny"
    )


def test_missing_weight_file_and_bad_registry(zoo: dict) -> None:
    (zoo["folder"] / "camvid-tiny.pt").unlink()
    with pytest.raises(ModelError, match="weight file .*camvid-tiny.pt is missing"):
        effseg.load("camvid-tiny")
    (zoo["folder"] / "models.yaml").write_text("models:\n  - {name: camvid-x, file: x.pt, dataset: camvid}\n")
    with pytest.raises(ModelError, match=r"models\[0\]: missing input_size"):
        list_pretrained()


def test_models_pretrained_cli(zoo: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "camvid-tiny" in out and "12.50" in out and "64x48" in out and "3.2" in out and "1 min" in out


def test_registry_fields_of_the_front(
    zoo: dict, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapped lines
    (zoo["folder"] / "models.yaml").write_text(
        "models:\n"
        "  - {name: camvid-tiny, file: camvid-tiny.pt, dataset: camvid, input_size: 64x48, role: fast,\n"
        "     miou_crossdrive: 52.25, crossdrive_folds: {0001TP: 50, 0006R0: 54.5},\n"
        "     crossdrive_recipe: effseg crossdrive tiny.yaml, train_data: train+val,\n"
        "     train_command: effseg train tiny.yaml, train_minutes: 40.5, iterations: 9,\n"
        "     latency_ms: {eager: 12.25, onnxruntime: 4.5}, machine: test box}\n"
        "  - {name: camvid-old, file: camvid-tiny.pt, dataset: camvid, input_size: 64x48,\n"
        "     miou_val: 61.5, train_data: train, cpu_latency_ms: 7}\n"
    )
    tiny, old = list_pretrained()
    assert tiny.role == "fast" and tiny.miou_crossdrive == 52.25 and tiny.train_data == "train+val"
    assert tiny.crossdrive_folds == {"0001TP": 50.0, "0006R0": 54.5}
    assert tiny.latency_ms == {"eager": 12.25, "onnxruntime": 4.5} and tiny.train_minutes == 40.5
    assert old.latency_ms == {"eager": 7.0} and old.miou_crossdrive is None  # older entries still load
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    for text in (
        "cross-drive",
        "same-drive val",
        "52.25",
        "61.50",
        "camvid train+val",
        "onnxruntime 4.5",
        "0006R0 54.50",
    ):
        assert text in out, text
    row = next(line for line in out.splitlines() if "camvid-old" in line)
    assert row.split("│")[3].strip() == "-"  # no cross-drive figure: "-", never a number
    row = next(line for line in out.splitlines() if "camvid-tiny" in line)
    assert row.split("│")[4].strip() == "-"  # trained on val: no same-drive val figure
    for bad, match in (
        ("role: fastest", r"models\[0\]\.role: 'fastest'; expected one of fast, balanced, accurate"),
        ("latency_ms: {eager: quick}", r"models\[0\]\.latency_ms\.eager: 'quick' is not a number"),
        ("latency_ms: 12", r"models\[0\]\.latency_ms: expected a mapping"),
        (
            "train_data: train+val, miou_val: 70",
            r"models\[0\]\.miou_val: the model was trained on val \(train\+val\), so a val figure measures "
            "memory; leave miou_val out and give miou_crossdrive$",
        ),
    ):
        entry = f"name: camvid-tiny, file: camvid-tiny.pt, dataset: camvid, input_size: 64x48, {bad}"
        (zoo["folder"] / "models.yaml").write_text(f"models:\n  - {{{entry}}}\n")
        with pytest.raises(ModelError, match=match):
            list_pretrained()


def test_shipped_registry_labels_its_figures() -> None:
    """The shipped entry keeps its name; a val figure only if val stayed unseen, a cross-drive
    figure only with its command."""
    from effseg.zoo import zoo_dir

    if zoo_dir() != Path(effseg.zoo.__file__).parent:
        pytest.skip("EFFSEG_ZOO_DIR points elsewhere")
    entry = find_pretrained("camvid-ddrnet23_slim")
    assert entry.train_data in ("train", "train+val")
    assert (entry.miou_val is None) == (entry.train_data == "train+val")
    assert entry.miou_crossdrive is None or entry.crossdrive_recipe  # a figure always has its command
    assert entry.latency_ms.get("eager") is not None and entry.machine


def test_eval_shipped_model(zoo: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _camvid_root(tmp_path / "camvid")
    out = tmp_path / "ev"
    code = main(["eval", "camvid-tiny", "--set", f"data.root={root}", "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "eval.json").read_text())
    assert data["num_images"] == 2 and data["checkpoint"] == "camvid-tiny"
    assert 0.0 <= data["miou"] <= 1.0


def test_shipped_configs_by_name(tmp_path: Path) -> None:
    names = list_configs()
    assert "camvid/lraspp_mbv3" in names and "cityscapes/pspnet_r18" in names
    path = find_config("camvid/lraspp_mbv3")
    assert path.name == "lraspp_mbv3.yaml" and path.parent.name == "camvid"
    assert find_config("configs/camvid/lraspp_mbv3.yaml").resolve() == path.resolve()
    own = tmp_path / "mine.yaml"
    own.write_text("model: {num_classes: 3}\n")
    assert find_config(own) == own  # a path keeps working
    with pytest.raises(ConfigError) as info:
        find_config("camvid/lraspp_mvb3")
    msg = str(info.value)
    assert msg.startswith(
        "config 'camvid/lraspp_mvb3': no such file or shipped config; near: camvid/lraspp_mbv3"
    )
    assert "\n" not in msg


def test_train_and_configs_cli_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    from effseg.cli.train import resolve

    cfg_file, run_dir = resolve("camvid/lraspp_mbv3", None)
    assert cfg_file == find_config("camvid/lraspp_mbv3") and run_dir == Path("runs/lraspp_mbv3")
    assert main(["train", "camvid/no_such_recipe"]) == 2
    assert "no such file or shipped config" in capsys.readouterr().err
    assert main(["configs", "camvid"]) == 0
    listed = capsys.readouterr().out.split()
    assert "camvid/lraspp_mbv3" in listed and all("camvid" in n for n in listed)


def test_help_imports_no_torch() -> None:
    """`effseg --help` and `effseg models --help` parse without importing torch (answer at once)."""
    import subprocess

    code = (
        "import sys\nfrom effseg.cli import main\n"
        "for argv in (['--help'], ['models', '--help'], ['configs', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'albumentations' not in sys.modules, 'albumentations imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "pretrained" in res.stdout and "COMMAND" in res.stdout
