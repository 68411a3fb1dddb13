"""A training run that cannot start says which key to set, and leaves no empty run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effseg.cli import main
from effseg.config import config_from_dict
from effseg.data.from_config import build_datasets, check_data_root
from effseg.errors import ConfigError, DataError


def _folder_dataset(root: Path, n_train: int = 3, n_classes: int = 11) -> Path:
    """A folder dataset of ``n_train`` train and 2 val images of 32x24, ``n_classes`` classes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{i}.png"
            )
            Image.fromarray(rng.integers(0, n_classes, (24, 32), dtype=np.uint8)).save(
                root / "masks" / split / f"{i}.png"
            )
    names = ", ".join(f"c{i}" for i in range(n_classes))
    (root / "classes.yaml").write_text(f"names: [{names}]\n")
    return root


def _config(root: str, dataset: str = "folder", **train: object) -> dict:
    return {
        "model": {"head": "fcn", "backbone": "mobilenetv3_small", "num_classes": 19},
        "data": {"dataset": dataset, "root": root, "crop_size": "32x24", "num_workers": 0},
        "train": {"iterations": 1, "batch_size": 8, "device": "cpu", "tensorboard": False, **train},
    }


def test_an_unset_data_root_names_the_key_and_what_the_folder_holds() -> None:
    cfg = config_from_dict(_config("", dataset="camvid"))
    want = (
        r"^data.root is not set \(dataset 'camvid'\); pass --set data.root=PATH, a folder holding "
        r"train/ trainannot/ val/ valannot/ \(SegNet's CamVid layout"
    )
    with pytest.raises(DataError, match=want):
        check_data_root(cfg)


def test_a_missing_data_root_names_the_key_and_the_path(tmp_path: Path) -> None:
    cfg = config_from_dict(_config(str(tmp_path / "nowhere")))
    want = r"^data.root=.*nowhere: no such folder \(dataset .folder.\); pass --set data.root=PATH, a folder"
    with pytest.raises(DataError, match=want):
        build_datasets(cfg)
    cityscapes = config_from_dict(_config(str(tmp_path / "nowhere"), dataset="cityscapes"))
    with pytest.raises(DataError, match=r"a folder holding leftImg8bit/train/ and gtFine/train/"):
        check_data_root(cityscapes)
    check_data_root(
        config_from_dict(_config(str(tmp_path / "new_city"), dataset="synthetic"))
    )  # generated there


def test_num_classes_mismatch_names_the_value_to_set(tmp_path: Path) -> None:
    cfg = config_from_dict(_config(str(_folder_dataset(tmp_path / "mydata"))))
    with pytest.raises(ConfigError, match=r"has 11 classes; set --set model.num_classes=11$"):
        build_datasets(cfg)


def test_a_batch_larger_than_the_data_names_the_key_and_leaves_no_run_folder(tmp_path: Path, capsys) -> None:
    root = _folder_dataset(tmp_path / "mydata")
    config = tmp_path / "mydata.yaml"
    config.write_text(f"model: {{head: fcn, backbone: mobilenetv3_small, num_classes: 11}}\n"
                      f"data: {{dataset: folder, root: {root}, crop_size: 32x24, num_workers: 0}}\n"
                      "train: {iterations: 1, batch_size: 8, device: cpu, tensorboard: false}\n")  # fmt: skip
    run_dir = tmp_path / "runs" / "mydata"
    assert main(["train", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert (
        "train.batch_size=8 is larger than the train set (3 images); set --set train.batch_size=3 or less"
        in err
    )
    assert not run_dir.exists(), "a failed start left an empty run folder"


def test_a_failed_start_keeps_a_folder_the_user_made(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dataset: camvid, root: {tmp_path / 'no_camvid'}}}\n")
    mine = tmp_path / "mine"
    mine.mkdir()  # an empty folder the user made stays (only folders effseg made are removed)
    assert main(["train", str(config), "--run-dir", str(mine)]) == 2
    assert "pass --set data.root=PATH" in capsys.readouterr().err
    assert mine.is_dir()
    made = tmp_path / "runs" / "c"
    assert main(["train", str(config), "--run-dir", str(made)]) == 2
    assert not (tmp_path / "runs").exists()  # nor the parent folder it made


def test_a_rank_failure_is_one_line_that_torchruns_summary_shows(tmp_path: Path, monkeypatch) -> None:
    """Under torchrun each rank stops with one line naming it; torchrun's agent reads the same line
    from the rank's error file (its ProcessFailure is what prints the failure summary)."""
    import torch.distributed as dist
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from effseg.engine.distributed import rank_failure

    err = DataError("data.root=/x: no such folder")
    assert rank_failure(err) is err  # run alone: unchanged, no file
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    assert str(rank_failure(err)) == "rank 1 of 2: data.root=/x: no such folder"
    failure = ProcessFailure(local_rank=1, pid=1, exitcode=2, error_file=str(error_file))
    assert failure.message["message"] == "effseg: error: rank 1 of 2: data.root=/x: no such folder"
    lost = rank_failure(dist.DistError("Connection closed by peer\n  [long gloo trace]"))
    assert str(lost) == (
        "rank 1 of 2: lost the other processes (DistError: Connection closed by peer); "
        "the first rank's error says why"
    )


def test_eval_of_the_shipped_model_asks_for_the_data_root(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # nothing called data/ or val/ here
    assert main(["eval", "camvid-ddrnet23_slim", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "effseg: error: data.root is not set (dataset 'camvid'); pass --set data.root=PATH, a folder "
        "holding val/ valannot/ (SegNet's CamVid layout: images, and label PNGs by the same name)"
    )
