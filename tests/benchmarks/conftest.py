"""The benchmark scripts are run as `python benchmarks/NAME.py` and import their siblings by
name (`import peers`); here each is loaded from its file under that name, siblings first."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.images import ROOT

BENCHMARKS = ROOT / "benchmarks"
SIBLINGS = {
    "crop_speed": ["peers"],
    "crop_quality": ["peers"],
    "group_photos": ["peers"],
    "worker_throughput": ["crop_speed"],
    "gpu_check": ["worker_throughput"],
}


def load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    for sibling in SIBLINGS.get(name, []):
        load(sibling)
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
