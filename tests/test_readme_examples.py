"""The README's examples run as written.

Every fenced ``bash`` / ``python`` block of README.md is preceded by a marker comment (hidden when
the page is rendered) that says how the suite runs it:

- ``<!-- test: run [slow] [fixtures=a,b] -->``: run as written (bash with ``-euo pipefail``, or
  ``python -c``) in an empty folder holding only what the named fixtures make (the block's own
  comments tell a reader what those inputs are: a folder of photos, a video, a trained run).
- ``<!-- test: serve -->``: a server command: started as written, ``/api/info`` fetched on
  http://127.0.0.1:8000, then stopped.
- ``<!-- test: check (why) -->``: too long or too big for the suite (installs, 40-minute trainings,
  GPUs, the suite itself): every line is checked instead. ``effseg`` and ``torchrun -m effseg``
  lines parse with effseg's own parser and their configs and ``--set`` keys load; ``pip install``
  extras exist in pyproject.toml; ``make`` targets exist in the Makefile.

The fixtures make small stand-ins: the trained runs ``runs/pspnet_r18`` and
``runs/demo/pspnet_r18`` are untrained 19-class FCN-MobileNetV3-Small checkpoints (so that export,
bench and eval take seconds), ``data/cityscapes`` is 2 + 2 random images in the Cityscapes layout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import effseg

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKED = re.compile(
    r"<!--\s*test:\s*(?P<marker>[^>]*?)\s*-->\s*\n```(?P<lang>bash|python)[^\n]*\n(?P<code>.*?)\n```", re.S
)
FENCED = re.compile(r"^```(bash|python)\s*$", re.M)
SERVE_URL = "http://127.0.0.1:8000/api/info"


@dataclass(frozen=True)
class Block:
    kind: str  # run | serve | check
    lang: str
    code: str
    line: int
    fixtures: tuple[str, ...] = ()
    slow: bool = False

    @property
    def id(self) -> str:
        first = next((ln for ln in self.code.splitlines() if ln.strip() and not ln.startswith("#")), "")
        return f"L{self.line}-{self.kind}-{first.split('#')[0].strip()[:40]}"


def readme_blocks(text: str) -> list[Block]:
    """Every marked block of ``text`` with its marker parsed."""
    blocks = []
    for m in MARKED.finditer(text):
        words = m["marker"].split()
        kind = words[0] if words else ""
        fixtures: tuple[str, ...] = ()
        for word in words[1:]:
            if word.startswith("fixtures="):
                fixtures = tuple(word.removeprefix("fixtures=").split(","))
        line = text.count("\n", 0, m.start("code")) + 1
        blocks.append(Block(kind, m["lang"], m["code"], line, fixtures, "slow" in words[1:]))
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- fixtures (inputs)


def _sample_photos() -> list[Path]:
    return [Path(p) for p in effseg.sample_images()]


def _photos(cwd: Path) -> None:
    (cwd / "photos").mkdir()
    for p in _sample_photos():
        shutil.copy(p, cwd / "photos" / p.name)


def _street(cwd: Path) -> None:
    shutil.copy(_sample_photos()[0], cwd / "street.jpg")


def _frames(cwd: Path) -> None:
    (cwd / "frames").mkdir()
    for p in _sample_photos()[:2]:
        Image.open(p).save(cwd / "frames" / f"{p.stem}.png")


def _dashcam(cwd: Path) -> None:
    """``dashcam.mp4``: 6 frames of 480x360 at 10 frames/s (the sample photos, each shown twice)."""
    import cv2

    writer = cv2.VideoWriter(str(cwd / "dashcam.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (480, 360))
    for p in _sample_photos()[:3] * 2:
        writer.write(cv2.imread(str(p)))
    writer.release()
    assert (cwd / "dashcam.mp4").stat().st_size > 0


def _stand_in_run(run: Path, data_root: str) -> None:
    """A run folder (config.yaml, last.pt, best.pt) of an untrained FCN-MobileNetV3-Small with the
    19 Cityscapes classes (as a Cityscapes run stores them: ``--label-ids`` needs them)."""
    import torch

    from effseg.config import config_from_dict, save_config
    from effseg.data import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from effseg.engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = effseg.build_model("fcn", backbone="mobilenetv3_small", num_classes=19)
    cfg = config_from_dict(
        {
            "model": {"head": "fcn", "backbone": "mobilenetv3_small", "num_classes": 19},
            "data": {"dataset": "cityscapes", "root": data_root, "num_workers": 0},
            "eval": {"num_workers": 0},
        }
    )
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    state = {
        "model": model.state_dict(),
        "model_config": model.config,
        "config": cfg.to_dict(),
        "classes": list(CITYSCAPES_CLASSES),
        "palette": np.asarray(CITYSCAPES_PALETTE).tolist(),
        "iteration": 0,
    }
    for name in ("last.pt", "best.pt"):
        save_checkpoint(run / name, state)


def _run_pspnet_r18(cwd: Path) -> None:
    _stand_in_run(cwd / "runs" / "pspnet_r18", "data/cityscapes")


def _demo_run(cwd: Path) -> None:
    _stand_in_run(cwd / "runs" / "demo" / "pspnet_r18", "data/synthetic")


def _cityscapes(cwd: Path) -> None:
    """``data/cityscapes``: 2 train + 2 val images of 256x128, road below, sky above (label ids)."""
    rng = np.random.default_rng(0)
    h, w = 128, 256
    for split in ("train", "val"):
        for i in range(2):
            label = np.full((h, w), 7, np.uint8)  # road
            label[: h // 3] = 23  # sky
            image = rng.integers(0, 255, (h, w, 3), np.uint8)
            for sub, name, array in (
                ("leftImg8bit", f"lindau_{i:06d}_000019_leftImg8bit.png", image),
                ("gtFine", f"lindau_{i:06d}_000019_gtFine_labelIds.png", label),
            ):
                folder = cwd / "data" / "cityscapes" / sub / split / "lindau"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / name)


def _mydata(cwd: Path) -> None:
    """``mydata/`` (3 classes, 8 train + 4 val discs on noise, 96x64) and a small ``mydata.yaml``."""
    rng = np.random.default_rng(0)
    root = cwd / "mydata"
    yy, xx = np.mgrid[:64, :96]
    for split, n in (("train", 8), ("val", 4)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((64, 96), np.uint8)
            for cls in (1, 2):
                cy, cx, r = rng.integers(12, 52), rng.integers(12, 84), rng.integers(6, 14)
                mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = cls
            colors = np.array([[90, 90, 90], [200, 60, 60], [60, 60, 200]])
            image = np.clip(colors[mask] + rng.normal(0, 25, (64, 96, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.jpg")
            Image.fromarray(mask).save(root / "masks" / split / f"{i:03d}.png")
    (root / "classes.yaml").write_text("names: [background, red, blue]\n")
    (cwd / "mydata.yaml").write_text(
        "model: {head: fcn, backbone: mobilenetv3_small, num_classes: 3}\n"
        "data: {dataset: folder, root: mydata, crop_size: 64x64, num_workers: 0}\n"
        "train: {iterations: 2, batch_size: 4, val_interval: 2, device: cpu, tensorboard: false}\n"
    )


FIXTURES: dict[str, Callable[[Path], None]] = {
    "photos": _photos,
    "street": _street,
    "frames": _frames,
    "dashcam": _dashcam,
    "run_pspnet_r18": _run_pspnet_r18,
    "demo_run": _demo_run,
    "cityscapes": _cityscapes,
    "mydata": _mydata,
}


@pytest.fixture(scope="module")
def effseg_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache for the README's blocks (the shipped model is exported once)."""
    return tmp_path_factory.mktemp("effseg_cache")


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", EFFSEG_CACHE=str(cache))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _command(block: Block) -> list[str]:
    if block.lang == "bash":
        return ["bash", "-euo", "pipefail", "-c", block.code]
    return [sys.executable, "-c", block.code]


# ----------------------------------------------------------------------------- the tests


def test_every_readme_block_is_marked() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(FENCED.findall(text)) == len(BLOCKS), (
        "a bash/python block of README.md has no <!-- test: ... -->"
    )
    for block in BLOCKS:
        assert block.kind in ("run", "serve", "check"), (
            f"README line {block.line}: unknown marker {block.kind!r}"
        )
        unknown = set(block.fixtures) - set(FIXTURES)
        assert not unknown, f"README line {block.line}: unknown fixture(s) {sorted(unknown)}"
    assert sum(b.kind == "run" for b in BLOCKS) >= 6, "fewer README examples run than before"


def test_marker_parser() -> None:
    text = "x\n<!-- test: run slow fixtures=a,b -->\n```bash\necho hi\n```\n\n```python\nprint(1)\n```\n"
    assert readme_blocks(text) == [Block("run", "bash", "echo hi", 4, ("a", "b"), True)]
    assert len(FENCED.findall(text)) == 2  # the unmarked one is counted, so the test above would fail


def _params(kind: str) -> list:
    return [
        pytest.param(b, id=b.id, marks=[pytest.mark.slow] if b.slow else []) for b in BLOCKS if b.kind == kind
    ]


@pytest.mark.parametrize("block", _params("run"))
def test_readme_block_runs_as_written(block: Block, tmp_path: Path, effseg_cache: Path) -> None:
    for name in block.fixtures:
        FIXTURES[name](tmp_path)
    proc = subprocess.run(
        _command(block), cwd=tmp_path, env=_env(effseg_cache), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (
        f"README block at line {block.line} failed with exit {proc.returncode}:\n{block.code}\n"
        f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    )


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("block", _params("serve"))
def test_readme_serve_block_starts_and_answers(block: Block, tmp_path: Path, effseg_cache: Path) -> None:
    if not _port_free(8000):
        pytest.skip("port 8000 is taken on this machine (the README's serve line uses it)")
    proc = subprocess.Popen(
        _command(block), cwd=tmp_path, env=_env(effseg_cache), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        info, deadline = None, time.monotonic() + 180
        while info is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(SERVE_URL, timeout=5) as response:
                    info = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert info is not None, f"no answer from {SERVE_URL}; exit {proc.poll()}"
        assert "sky" in json.dumps(info) and "road" in json.dumps(info), info  # the shipped CamVid classes
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert "Traceback" not in out, out[-3000:]


def _lines(code: str) -> list[list[str]]:
    """The block's commands as argument lists (comments dropped, ``\\`` continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def _check_effseg(argv: list[str], where: str) -> None:
    from effseg.cli import build_parser

    parser = build_parser(only=argv[0])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{where}: effseg {' '.join(argv)}: the parser refused it") from exc
    if argv[0] == "train":  # the config resolves (file or shipped name) and every --set key loads
        from effseg.cli.train import resolve
        from effseg.config import load_config

        config_file, _ = resolve(args.config, args.run_dir)
        load_config(config_file, [item for group in args.overrides for item in group])


def pyproject_extras() -> set[str]:
    """The extras pyproject.toml declares (read as text: tomllib needs Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*=", section, re.M))


def _check_pip(argv: list[str], where: str) -> None:
    extras = pyproject_extras()
    for target in (a for a in argv[2:] if not a.startswith("-")):
        for group in re.findall(r"\[([^\]]+)\]", target):
            for extra in group.split(","):
                assert extra.strip() in extras, f"{where}: pip install {target}: no extra {extra!r}"


def _check_make(argv: list[str], where: str) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in argv[1:]:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{where}: no make target {target!r}"


@pytest.mark.parametrize("block", _params("check"))
def test_readme_block_checks(block: Block) -> None:
    assert block.lang == "bash", "only shell blocks are checked line by line"
    for argv in _lines(block.code):
        where = f"README line {block.line}"
        if argv[0] == "effseg":
            _check_effseg(argv[1:], where)
        elif argv[0] == "torchrun":
            assert argv[argv.index("-m") + 1] == "effseg", f"{where}: torchrun runs -m effseg"
            _check_effseg(argv[argv.index("-m") + 2 :], where)
        elif argv[:2] == ["pip", "install"]:
            _check_pip(argv, where)
        elif argv[0] == "make":
            _check_make(argv, where)
        else:
            raise AssertionError(
                f"{where}: {argv[0]!r}: a checked block holds effseg, torchrun, pip or make lines"
            )


def test_checks_catch_a_wrong_line() -> None:
    with pytest.raises(AssertionError, match="no extra 'gpu'"):
        _check_pip(["pip", "install", ".[gpu]"], "x")
    with pytest.raises(AssertionError, match="no make target 'deploy'"):
        _check_make(["make", "deploy"], "x")
    with pytest.raises(AssertionError, match="the parser refused it"):
        _check_effseg(["predict"], "x")
    from effseg.errors import ConfigError

    with pytest.raises(ConfigError, match="train.bach_size"):
        _check_effseg(["train", "camvid/cpu_40min", "--set", "train.bach_size=2"], "x")
