"""Shared test settings: headless plots, bounded threads, deterministic seeds."""

import atexit
import os
import shutil
import signal
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


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The synthetic city of ``helpers_engine.CITY_OPTIONS``, generated once per test module."""
    from effseg.data import build_dataset
    from helpers_engine import CITY_OPTIONS

    root = tmp_path_factory.mktemp("city") / "synthetic"
    build_dataset("synthetic", root, "train", **CITY_OPTIONS)
    return root


@pytest.fixture
def one_thread():  # noqa: ANN201
    """One intra-op thread for the test, then the earlier count back: the CI machine is shared,
    and one thread is faster than two oversubscribed ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _default_sigchld() -> None:
    """SIGCHLD back to its default after each test. A multi-worker DataLoader installs a Python
    SIGCHLD handler in the main process and leaves it there; in a long-lived pytest worker, a
    child's exit, delivered to that handler while the worker blocked reading another child's
    pipe, was later answered with a kernel-raised SIGSEGV (SI_KERNEL: the signal frame could not
    be set up) that killed the worker (2026-12-03, AMD EPYC, torch 2.13.0). A CLI run is one
    short process; the suite's workers are not."""
    yield
    if signal.getsignal(signal.SIGCHLD) not in (signal.SIG_DFL, None):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        import torch.utils.data._utils.signal_handling as handling

        handling._SIGCHLD_handler_set = False  # the next DataLoader installs its handler again
