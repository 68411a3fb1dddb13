"""Old import paths of the modules that moved out of ``effseg.tools`` (0.1 -> 0.2).

``effseg.tools`` held the predict pipeline, the benchmarks' engine, the demo and the web page;
they now live in packages named for their jobs (docs/architecture.md): ``effseg.pipeline``,
``effseg.bench``, ``effseg.app`` and ``effseg.deploy.export_run``. ``import effseg.tools.X``
keeps working for one release: it warns once with the new path and returns the new module
(the same object, so patches and ``isinstance`` checks see one module).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old name under ``effseg.tools`` -> the module it is now.
MOVED = {
    "bench": "effseg.bench.measure",
    "bench_runners": "effseg.bench.runners",
    "bench_report": "effseg.bench.report",
    "timing": "effseg.bench.timing",
    "sysinfo": "effseg.bench.sysinfo",
    "models_table": "effseg.bench.models_table",
    "pareto": "effseg.bench.pareto",
    "runtime": "effseg.pipeline.engines",
    "pipeline": "effseg.pipeline.threaded",
    "video": "effseg.pipeline.video",
    "postprocess": "effseg.pipeline.postprocess",
    "export_cache": "effseg.pipeline.export_cache",
    "predict": "effseg.pipeline.predict",
    "export": "effseg.deploy.export_run",
    "demo": "effseg.app.demo",
    "street_demo": "effseg.app.street_demo",
    "report": "effseg.app.demo_report",
    "serve": "effseg.app.serve",
    "serve_page": "effseg.app.serve_page",
}


def _moved(old: str) -> str:
    new = MOVED[old]
    warnings.warn(f"effseg.tools.{old} moved to {new}; import that instead", FutureWarning, stacklevel=3)
    return new


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import effseg.tools.X`` -> the module ``MOVED[X]`` (a finder: the import system has no
    alias mechanism, and a shim file per old name would put each name in the tree twice)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.rpartition(".")
        if prefix != __name__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(_moved(spec.name.rpartition(".")[2]))

    def exec_module(self, module):  # the new module is already executed
        pass


def __getattr__(name: str):
    if name in MOVED:
        return importlib.import_module(_moved(name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
