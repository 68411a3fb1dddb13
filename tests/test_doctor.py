"""``effseg doctor``: versions, runtimes, the CPU's instruction sets (read, not assumed), what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from effseg.bench import doctor
from effseg.cli import main

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
flags\t\t: fpu
"""
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma f16c
"""


def _report(tmp_path: Path, cpuinfo: str, monkeypatch, missing: tuple[str, ...] = ()) -> dict:
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda dist: None if dist in missing else real(dist))
    return doctor.doctor_report(str(path))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path, monkeypatch) -> None:
    xeon = _report(tmp_path, XEON, monkeypatch)["cpu"]
    assert xeon["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert xeon["flags"] == dict.fromkeys(doctor.CPU_FEATURES, True) | {"avx_vnni": False}
    zen = _report(tmp_path, ZEN3, monkeypatch)
    assert {f for f, on in zen["cpu"]["flags"].items() if on} == {"avx2", "fma"}
    assert zen["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()  # measured by torch
    text = doctor.format_report(zen)
    assert "bf16: no AMX / AVX-512-BF16: OpenVINO runs fp32 here" in text
    assert "bf16: OpenVINO runs bf16 graphs here" in doctor.format_report(
        _report(tmp_path, XEON, monkeypatch)
    )


def test_this_machines_flags_match_its_cpuinfo() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo (not Linux)")
    block = cpuinfo.read_text().split("\n\n", 1)[0]
    flags = next(line.split(":", 1)[1].split() for line in block.splitlines() if line.startswith("flags"))
    assert doctor.cpu_features()["flags"] == {f: f in flags for f in doctor.CPU_FEATURES}


def test_missing_optional_runtimes_say_what_they_are_for(tmp_path: Path, monkeypatch) -> None:
    report = _report(tmp_path, ZEN3, monkeypatch, missing=("openvino", "torchao"))
    assert report["runtimes"]["openvino"] == {"ready": False, "missing": ["openvino"]}
    assert report["runtimes"]["compile-int8"] == {"ready": False, "missing": ["torchao"]}
    assert "openvino" not in report["auto_candidates"] and "onnxruntime" in report["auto_candidates"]
    text = doctor.format_report(report)
    assert (
        "  openvino: --runtime openvino / openvino-int8 (an auto candidate); pip install 'effseg[all]'"
        in text
    )
    assert "  openvino         needs openvino" in text
    assert doctor.default_dependencies_missing(report) == []


def test_a_missing_default_dependency_is_a_broken_install(tmp_path: Path, monkeypatch, capsys) -> None:
    report = _report(tmp_path, ZEN3, monkeypatch, missing=("onnxruntime", "uvicorn"))
    assert doctor.default_dependencies_missing(report) == ["onnxruntime", "uvicorn"]
    assert report["runtimes"]["onnxruntime"]["missing"] == ["onnxruntime"]
    assert report["runtimes"]["serve"] == {"ready": False, "missing": ["uvicorn"]}
    assert "  uvicorn: effseg serve (the web server); pip install uvicorn" in doctor.format_report(report)
    assert main(["doctor"]) == 1  # the same monkeypatched install, through the command


def test_doctor_command_prints_json(capsys) -> None:
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["packages"]["torch"]["version"] == torch.__version__
    assert report["runtimes"]["eager"] == {"ready": True, "missing": []}
    assert report["runtimes"]["onnxruntime"]["ready"]  # a default dependency
