"""effseg models: parameter / FLOP counting, markdown, CLI, docs/models.md in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from effseg.bench.models_table import (
    TABLE_END,
    TABLE_START,
    count_flops,
    count_params,
    model_stats,
    parse_size,
    to_markdown,
    write_markdown,
)
from effseg.cli import main
from effseg.errors import ConfigError
from effseg.models import build_model, list_models


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: one thread is as fast, and on a loaded 2-core machine two OpenMP
    # threads spin-wait on each other (a training step measured 60x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def test_parse_size() -> None:
    assert parse_size("1024x512") == (512, 1024)
    assert parse_size(" 97X131 ") == (131, 97)
    for bad in ("1024", "0x5", "axb", "1024x512x3", ""):
        with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
            parse_size(bad)


def test_count_flops_multiply_add_is_two() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
    # 8 outputs x 3 inputs x 3x3 kernel x 10x12 pixels multiply-adds, 2 FLOPs each
    assert count_flops(conv, (10, 12))["flops"] == 2 * 8 * 3 * 9 * 10 * 12
    assert count_flops(conv, (10, 12), batch=3)["flops"] == 3 * 2 * 8 * 3 * 9 * 10 * 12
    x = torch.zeros(2, 3, 10, 12)
    assert count_flops(conv, x)["gflops"] == pytest.approx(2 * 2 * 8 * 3 * 9 * 10 * 12 / 1e9)
    assert conv.training  # mode restored


def test_meta_counting_equals_cpu_counting() -> None:
    stats = model_stats("lraspp", "mobilenetv3_small", input_size=(64, 96), num_classes=5)
    cpu = build_model("lraspp", "mobilenetv3_small", num_classes=5, aux=False)
    assert stats["params"] == sum(p.numel() for p in cpu.parameters())
    assert stats["gflops"] * 1e9 == count_flops(cpu, (64, 96))["flops"]
    # the aux FCN head is not part of the inference model
    with_aux = build_model("lraspp", "mobilenetv3_small", num_classes=5)
    assert sum(p.numel() for p in with_aux.parameters()) > stats["params"]


def test_markdown_written_between_markers(tmp_path: Path) -> None:
    rows = [{"head": "pspnet", "backbone": "resnet18", "params": 16_170_000, "gflops": 269.99}]
    assert to_markdown(rows).splitlines()[-1] == "| pspnet | resnet18 | 16.17 | 270.0 |"
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nbefore\n\n{TABLE_START}\nold table\n{TABLE_END}\n\nafter\n")
    write_markdown(doc, rows, "caption text")
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old table" not in text and "caption text" in text and "| pspnet | resnet18 | 16.17 |" in text
    fresh = write_markdown(tmp_path / "sub" / "new.md", rows, "c")
    assert fresh.read_text().startswith(TABLE_START)


def test_cli_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.md"
    argv = ["models", "--head", "lraspp", "--head", "fcn", "--backbone", "mobilenetv3_small"]
    assert main([*argv, "--input-size", "96x64", "--markdown", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mobilenetv3_small" in printed and "lraspp" in printed
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| lraspp", "| fcn"]
    assert "input 1x3x64x96" in out.read_text()
    assert main(["models", "--input-size", "96by64"]) == 2
    assert "effseg: error: --input-size '96by64'" in capsys.readouterr().err
    assert main(["models", "--head", "nohead"]) == 2
    assert "--head 'nohead': expected one of" in capsys.readouterr().err


@pytest.mark.parametrize(("head", "backbone"), [("pspnet", "resnet18"), ("lraspp", "mobilenetv3_large")])
def test_docs_table_is_current(head: str, backbone: str) -> None:
    text = DOCS.read_text()
    m = re.search(rf"^\| {head} \| {backbone} \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
    assert m, f"{head}/{backbone} missing from docs/models.md (run: effseg models --markdown docs/models.md)"
    stats = model_stats(head, backbone, input_size=(512, 1024))
    assert (m.group(1), m.group(2)) == (f"{stats['params'] / 1e6:.2f}", f"{stats['gflops']:.1f}")


def _parameters_an_eval_forward_uses(model: nn.Module, x: torch.Tensor) -> int:
    """Parameters of the modules an eval-mode forward of ``x`` calls (each parameter once)."""
    called: set[int] = set()
    hooks = [m.register_forward_hook(lambda mod, args, out: called.add(id(mod))) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    used = {id(p): p for m in model.modules() if id(m) in called for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in used.values())


@pytest.mark.parametrize("name", list_models())
def test_params_m_is_what_an_eval_forward_uses(name: str) -> None:
    """count_params' one rule: every model declares the parameters its eval-mode forward uses
    (aux heads excluded), measured here by the modules that forward calls."""
    model = build_model(name, num_classes=5)  # with its auxiliary heads (the default)
    used = _parameters_an_eval_forward_uses(model, torch.randn(1, 3, 64, 64))
    total = sum(p.numel() for p in model.parameters())
    assert model.inference_parameters() == used <= total
    if name in ("pspnet", "ddrnet23_slim", "pidnet_s", "bisenetv2"):  # their aux heads: training only
        assert used < total
    assert count_params(model) == {"params_m": used / 1e6, "params_total_m": total / 1e6}
    plain = nn.Sequential(nn.Conv2d(3, 4, 1))  # declares nothing: all its parameters
    assert count_params(plain)["params_m"] == count_params(plain)["params_total_m"] == 16 / 1e6
