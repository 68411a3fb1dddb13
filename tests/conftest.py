"""Shared test settings: headless plots, bounded threads, deterministic seeds."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
# Two xdist workers share two cores, and many tests start effseg/torchrun processes: OpenMP
# threads that spin while they wait for work steal the other worker's core (a user's own
# setting is kept).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Each pytest-xdist worker gets its own compile and export caches: two workers that compile
# the same graph at once (the compile-int8 fixture is built in both) must not write and load
# the same shared-object files in one folder, and no test reads what a user's cache holds.
_WORKER_CACHE = tempfile.mkdtemp(prefix=f"effseg-tests-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
os.environ["EFFSEG_CACHE"] = os.path.join(_WORKER_CACHE, "effseg")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(_WORKER_CACHE, "inductor")
atexit.register(shutil.rmtree, _WORKER_CACHE, ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests use small tensors: one intra-op thread is fastest, and on a loaded 2-core
# machine OpenMP spin-waiting made small training steps up to 60x slower with 2.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
