"""Shared test settings: headless plots, bounded threads, deterministic seeds."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests use small tensors: one intra-op thread is fastest, and on a loaded 2-core
# machine OpenMP spin-waiting made small training steps up to 60x slower with 2.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
