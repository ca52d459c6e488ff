"""Every TensorRT and CUDA name the GPU path uses exists in the installed bindings.

The fakes in fakes.py expose exactly what cropworker.gpu calls (the fake-backed tests fail if
the code uses anything else), so checking the fakes' public names, and the number of arguments
of their methods, against the real modules checks the code. TensorRT's runtime is checked
against tensorrt-lean (`pip install 'cropworker[gpu]'`); builder-only classes are not in the
lean package and cannot be checked without the full one (see BUILDER_ONLY_CLASSES). Skipped
when the bindings are not installed.
"""

from __future__ import annotations

import enum
import inspect
import re
from typing import Any

import pytest

from cropworker.gpu.cuda import OUT_OF_MEMORY_ERRORS, UNAVAILABLE_ERRORS

from .fakes import BUILDER_ONLY_CLASSES, CUDA_TYPES, RUNTIME_CLASSES, FakeCudart, ILogger

# The classes cropworker constructs itself; TensorRT makes the others.
CONSTRUCTED = {"Runtime", "ILogger"}


def public(cls: type, name: str) -> dict[str, Any]:
    """The fake's API: public names defined by the fake itself, test helpers excluded."""
    names: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ != "tests.gpu.fakes":
            continue
        for member, value in vars(klass).items():
            if not member.startswith(("_", "fake_")) or (
                member == "__init__" and name in CONSTRUCTED
            ):
                names[member] = value
    return names


def split_params(text: str) -> list[str]:
    params, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            params.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        params.append(current.strip())
    return [p for p in params if not p.startswith(("self", "*args", "**kwargs"))]


def real_arities(doc: str, name: str) -> set[tuple[int, int]]:
    """(required, total) argument counts of every signature of `name` in a pybind11 or Cython
    docstring."""
    found = set()
    for m in re.finditer(rf"(?:^|\s){re.escape(name)}\((.*)\)", doc or "", re.MULTILINE):
        params = split_params(m.group(1))
        if m.group(1) != "*args, **kwargs":
            found.add((sum("=" not in p for p in params), len(params)))
    return found


def accepts(real: set[tuple[int, int]], fake: tuple[int, int]) -> bool:
    """Does some real signature take an argument count the fake (so the code) may pass?"""
    return any(max(lo, fake[0]) <= min(hi, fake[1]) for lo, hi in real)


def fake_arity(func: Any) -> tuple[int, int]:
    params = list(inspect.signature(func).parameters.values())[1:]  # without self
    required = sum(p.default is inspect.Parameter.empty for p in params)
    return required, len(params)


@pytest.fixture(scope="module")
def lean() -> Any:
    return pytest.importorskip("tensorrt_lean")


@pytest.fixture(scope="module")
def cudart() -> Any:
    return pytest.importorskip("cuda.bindings.runtime")


@pytest.mark.parametrize("name", sorted(RUNTIME_CLASSES))
def test_tensorrt_runtime_names_exist_in_tensorrt_lean(lean: Any, name: str) -> None:
    fake, real = RUNTIME_CLASSES[name], getattr(lean, name)
    if issubclass(fake, enum.Enum):
        missing = [m for m in fake.__members__ if not hasattr(real, m)]
        assert not missing, f"{name} lacks {missing}"
        return
    for member, value in public(fake, name).items():
        if isinstance(value, type):  # a nested enum such as ILogger.Severity
            real_enum = getattr(real, member)
            assert set(value.__members__) <= set(real_enum.__members__), f"{name}.{member}"
            continue
        assert hasattr(real, member), f"tensorrt_lean.{name} has no {member}"
        static = inspect.getattr_static(real, member)
        if isinstance(value, property) or not callable(value):
            assert isinstance(static, property), f"{name}.{member} is not an attribute"
            continue
        arities = real_arities(getattr(real, member).__doc__, member)
        assert accepts(arities, fake_arity(value)), (
            f"{name}.{member} takes {sorted(arities)} arguments, the fake {fake_arity(value)}"
        )


def test_tensorrt_module_level_names(lean: Any) -> None:
    for name in ("__version__", "Runtime", "ILogger", "TensorIOMode", "DataType", "BuilderFlag"):
        assert hasattr(lean, name), name
    assert set(ILogger.Severity.__members__) == set(lean.ILogger.Severity.__members__)
    assert int(lean.ILogger.Severity.ERROR) == 1  # trtlib.LogCapture relies on the numbering
    assert not hasattr(lean.BuilderFlag, "FP16")  # why --fp16 converts the ONNX instead


def test_builder_only_names_are_really_absent_from_tensorrt_lean(lean: Any) -> None:
    """These are used by engine.py and cannot be checked here: the lean package has no builder.
    Their names follow NVIDIA's TensorRT 10/11 Python samples (Builder.create_network,
    OnnxParser.parse / num_errors / get_error, IBuilderConfig.add_optimization_profile /
    set_flag / set_memory_pool_limit / create_timing_cache / set_timing_cache /
    get_timing_cache, Builder.build_serialized_network). Should a lean release grow them,
    this fails, and they move to the checked set."""
    present = [name for name in BUILDER_ONLY_CLASSES if hasattr(lean, name)]
    assert present == []


@pytest.mark.parametrize("name", sorted(n for n in vars(FakeCudart) if n.startswith("cuda")))
def test_cuda_runtime_functions_exist_with_the_same_arity(cudart: Any, name: str) -> None:
    fake = getattr(FakeCudart, name)
    if isinstance(fake, type) or not callable(fake):  # enums and constants
        assert hasattr(cudart, name), name
        return
    real = getattr(cudart, name)
    assert accepts(real_arities(real.__doc__, name), fake_arity(fake)), name


def test_cuda_types_and_error_codes(cudart: Any) -> None:
    for name, fake in CUDA_TYPES.items():
        real = getattr(cudart, name)
        if issubclass(fake, enum.Enum):
            for member in fake:
                assert int(getattr(real, member.name)) == member.value, member
    props = cudart.cudaDeviceProp()
    for attr in ("name", "major", "minor", "totalGlobalMem"):
        assert hasattr(props, attr), attr
    assert int(cudart.cudaStream_t(0)) == 0  # the backend passes int(stream) to TensorRT
    for name in UNAVAILABLE_ERRORS | OUT_OF_MEMORY_ERRORS:
        assert hasattr(cudart.cudaError_t, name), name
