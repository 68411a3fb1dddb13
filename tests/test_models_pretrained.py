"""load_pretrained: torchvision-format files, clear errors, pickles carrying code refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from effseg.errors import CheckpointError
from effseg.models import build_model, load_pretrained
from effseg.models.backbones import build_backbone


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: one thread is as fast, and on a loaded 2-core machine two OpenMP
    # threads spin-wait on each other (a training step measured 60x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _imagenet_file(tmp_path: Path, name: str, wrap: str | None = None, prefix: str = "") -> Path:
    """A torchvision-style ImageNet checkpoint: classifier included, optionally wrapped / prefixed."""
    torch.manual_seed(1)
    src = build_backbone(name, output_stride=32, classifier=True)
    for p in src.parameters():  # distinctive values
        p.data.normal_()
    state = {prefix + k: v for k, v in src.state_dict().items()}
    obj = {wrap: state, "epoch": 90} if wrap else state
    path = tmp_path / f"{name}.pth"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    ("name", "wrap", "prefix"),
    [("resnet18", None, ""), ("mobilenetv2", "state_dict", "module."), ("mobilenetv3_small", "model", "")],
)
def test_round_trip(tmp_path: Path, name: str, wrap: str | None, prefix: str) -> None:
    path = _imagenet_file(tmp_path, name, wrap, prefix)
    saved = torch.load(path, weights_only=True)
    saved = saved[wrap] if wrap else saved
    net = build_backbone(name)
    assert load_pretrained(net, path) is net
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, saved[prefix + k], msg=k)


def test_build_model_with_pretrained_backbone(tmp_path: Path) -> None:
    path = _imagenet_file(tmp_path, "resnet18")
    model = build_model("pspnet", "resnet18", num_classes=3, pretrained_backbone=path)
    torch.testing.assert_close(
        model.backbone.conv1.weight, torch.load(path, weights_only=True)["conv1.weight"]
    )
    assert "pretrained_backbone" not in model.config  # rebuilding needs no file
    # a Segmentor is accepted too (its backbone is loaded)
    other = build_model("fcn", "resnet18", num_classes=3)
    load_pretrained(other, path)
    torch.testing.assert_close(
        other.backbone.layer4[1].bn2.running_var, model.backbone.layer4[1].bn2.running_var
    )


def test_other_architecture_lists_the_mismatches(tmp_path: Path) -> None:
    path = _imagenet_file(tmp_path, "resnet50")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(build_backbone("resnet18"), path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "resnet18" in msg
    # resnet50 has conv3/bn3 in every block and 10 more blocks; resnet18 misses nothing
    assert "; unexpected " in msg and " keys in layer1.0.conv3, layer1.0.bn3, " in msg
    assert "missing" not in msg
    assert "shape mismatches (file vs model): layer1.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)" in msg
    assert "in all)" in msg  # long lists are shortened with a count
    path2 = _imagenet_file(tmp_path, "resnet18")
    # resnet34 has 8 more BasicBlocks than resnet18: 8 x (2 convs + 2 BNs x 5 keys) = 96 keys
    with pytest.raises(
        CheckpointError, match=r"missing 96 keys in layer1\.2\.conv1, layer1\.2\.bn1, .*modules\)$"
    ):
        load_pretrained(build_backbone("resnet34"), path2)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a state dict of tensors"):
        load_pretrained(build_backbone("mobilenetv3_small"), path)
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read as a PyTorch checkpoint"):
        load_pretrained(build_backbone("mobilenetv3_small"), bad)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_pretrained(build_backbone("mobilenetv3_small"), tmp_path / "missing.pth")


class _Evil:
    def __reduce__(self):  # runs code at unpickling time
        return (Path.touch, (Path(_Evil.marker),))


def test_pickle_carrying_code_is_refused(tmp_path: Path) -> None:
    _Evil.marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match=r"refused to load: it references code \(.*GLOBAL") as err:
        load_pretrained(build_backbone("resnet18"), path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()
    # a plain pickle (not a torch zip file) carrying code is refused the same way
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"conv1.weight": _Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="refused to load: it references code"):
        load_pretrained(build_backbone("resnet18"), raw)
    assert not (tmp_path / "pwned").exists()


def test_reduced_tail_loads_all_but_the_reduced_stage(tmp_path: Path) -> None:
    # torchvision publishes no reduced-tail weights: a full MobileNetV3 file fills every layer
    # before the last stage, the reduced tensors keep their initialisation, and a warning says so.
    path = _imagenet_file(tmp_path, "mobilenetv3_small")
    saved = torch.load(path, weights_only=True)
    net = build_backbone("mobilenetv3_small", output_stride=16, reduced_tail=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(UserWarning, match=r"tensors of the reduced last stage \(features.9, features.10"):
        load_pretrained(net, path)
    loaded = skipped = 0
    for k, v in net.state_dict().items():
        if v.shape == saved[k].shape:
            torch.testing.assert_close(v, saved[k], msg=k)
            loaded += 1
        else:
            assert k.startswith(("features.9.", "features.10.", "features.11.", "features.12.")), k
            torch.testing.assert_close(v, before[k], msg=k)
            skipped += 1
    assert loaded > 100 and skipped > 10
    # without reduced_tail the same file must still fit exactly (no silent skipping)
    assert build_backbone("mobilenetv3_small").pretrained_partial == ()
