"""Test-time augmentation: one implementation (effseg.engine.tta) behind eval, predict and the
Predictor, and the cost eval reports beside the mIoU."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effseg
from effseg.api import Predictor
from effseg.cli import main
from effseg.engine.evaluate import cost_line, evaluate, inference_cost, markdown_table
from effseg.engine.tta import describe_tta, parse_tta, predict_scores
from effseg.errors import ConfigError, ModelError
from effseg.models.contract import class_ids


def halves(x: torch.Tensor) -> torch.Tensor:
    """Logits (B, 3, H, W): class 1 on the left half of any input, class 2 on the right."""
    b, _, h, w = x.shape
    logits = torch.zeros(b, 3, h, w)
    logits[:, 1, :, : w // 2] = 5.0
    logits[:, 2, :, w // 2 :] = 5.0
    return logits


def _predictor(forward, **kw) -> Predictor:
    return Predictor(forward, classes=["a", "b", "c"], mean=(0, 0, 0), std=(1, 1, 1), **kw)


def test_parse_and_describe_round_trip() -> None:
    assert parse_tta("none") == ([1.0], False)
    assert describe_tta(*parse_tta("flip,0.75,1.25")) == "flip,0.75,1.25"
    assert describe_tta(*parse_tta("flip")) == "flip"
    assert describe_tta(*parse_tta(None)) == "none"
    with pytest.raises(ConfigError, match="'mirror'"):
        parse_tta("mirror")


def test_predictor_flip_averages_the_mirrored_pass() -> None:
    image = np.zeros((8, 12, 3), np.uint8)
    p = _predictor(halves)
    plain = p.predict(image)
    assert (plain[:, :6] == 1).all() and (plain[:, 6:] == 2).all()
    # the mirrored pass votes 2 on the left, 1 on the right: the mean softmax ties classes 1 and 2
    # everywhere, and the argmax takes the first
    flipped = p.predict(image, tta="flip")
    assert (flipped == 1).all()
    # the Predictor's answer is predict_scores' (the one TTA implementation)
    x = torch.zeros(1, 3, 8, 12)
    ref = class_ids(predict_scores(halves, x, (8, 12), 3, flip=True))[0].numpy()
    np.testing.assert_array_equal(flipped, ref)
    # the attribute is the default; the argument wins
    p.tta = "flip"
    np.testing.assert_array_equal(p.predict(image), flipped)
    np.testing.assert_array_equal(p.predict(image, tta="none"), plain)


def test_predictor_scales_run_the_network_at_each_size() -> None:
    seen: list[tuple[int, int]] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[-2:]))
        return halves(x)

    out = _predictor(forward, input_size="40x20").predict(np.zeros((10, 16, 3), np.uint8), tta="0.5,1.0")
    assert seen == [(10, 20), (20, 40)] and out.shape == (10, 16)


def test_fixed_size_graph_refuses_scales_but_takes_flip() -> None:
    p = _predictor(halves, fixed_input_size="12x8")
    with pytest.raises(ModelError, match="fixed input size"):
        p.predict(np.zeros((8, 12, 3), np.uint8), tta="0.5,1.0")
    assert (p.predict(np.zeros((8, 12, 3), np.uint8), tta="flip") == 1).all()


class _Images(torch.utils.data.Dataset):
    classes = ["a", "b", "c"]
    num_classes = 3

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        label = torch.ones(8, 12, dtype=torch.long)
        label[:, 6:] = 2
        return torch.zeros(3, 8, 12), label


def test_eval_reports_the_cost_of_its_tta_beside_the_miou() -> None:
    def slow(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return halves(x)

    plain = evaluate(slow, _Images(), progress=False)
    assert plain["miou"] == pytest.approx(1.0)
    assert plain["tta"] == "none" and plain["tta_passes"] == 1
    assert plain["ms_per_image"] >= 10.0 and plain["ms_single_pass"] == pytest.approx(plain["ms_per_image"])
    flip = evaluate(slow, _Images(), tta="flip", progress=False)
    assert flip["tta"] == "flip" and flip["tta_passes"] == 2
    assert flip["ms_per_image"] >= 20.0 and flip["ms_single_pass"] >= 10.0
    assert flip["ms_per_image"] > flip["ms_single_pass"]
    assert "Inference cost: TTA flip (2 passes)" in markdown_table(flip)
    assert "no TTA" in markdown_table(plain)


def test_inference_cost_from_pass_times() -> None:
    times = [[(1.0, False, 0.010), (1.0, True, 0.012)], [(1.0, False, 0.020), (1.0, True, 0.022)]]
    cost = inference_cost(times, [1.0], True)
    assert cost == {
        "tta": "flip",
        "tta_passes": 2,
        "ms_per_image": pytest.approx(32.0),
        "ms_single_pass": 15.0,
    }
    assert cost_line(cost) == "TTA flip (2 passes): 32.0 ms/image, the plain pass alone 15.0 ms (2.1x)"
    no_plain = inference_cost([[(0.5, False, 0.004), (0.75, False, 0.006)]], [0.5, 0.75], False)
    assert no_plain["ms_single_pass"] is None and no_plain["tta"] == "0.5,0.75"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tta") / "m.pt"
    torch.manual_seed(0)
    model = effseg.build_model("fcn", backbone="mobilenetv2", num_classes=3, aux=False)
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": model.config,
            "classes": ["a", "b", "c"],
            "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "config": {},
        },
        path,
    )
    return path


def test_cli_predict_tta_matches_the_api(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.set_num_threads(1)
    img = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    out = tmp_path / "out"
    args = ["predict", str(ckpt), str(tmp_path / "x.png"), "--out", str(out), "--class-ids", "--no-progress"]
    assert main([*args, "--tta", "flip,0.75,1.0"]) == 0
    assert "runtime eager, TTA flip,0.75,1" in capsys.readouterr().err
    ids = np.asarray(Image.open(out / "ids" / "x.png"))
    np.testing.assert_array_equal(ids, effseg.load(ckpt).predict(img, tta="flip,0.75,1.0"))
    assert main([*args, "--tta", "flip", "--runtime", "onnxruntime"]) == 2
    assert "--tta flip: test-time augmentation runs with --runtime auto or eager" in capsys.readouterr().err
    assert main([*args, "--tta", "mirror"]) == 2
    assert "--tta item 'mirror'" in capsys.readouterr().err
