"""Every PyTorch name the cuda backend uses exists in the installed PyTorch, with a call
signature that takes the arguments the backend passes.

The fake in torch_fakes.py replaces exactly `torch.cuda` (and `torch.empty`, for pinned memory),
so the fake-backed tests fail if the backend uses anything else there; checking the fake's
public names and parameters against the real module checks the code. A renamed or reshaped
API fails here, on a machine without a GPU, instead of on the GPU. Names outside `torch.cuda`
that only the GPU branch touches are listed in `test_the_rest_of_what_the_gpu_branch_uses`.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from .torch_fakes import CUDAGraph, FakeCuda, Stream  # noqa: E402

# The fake's classes and the real ones they stand for.
CLASSES = {"Stream": Stream, "CUDAGraph": CUDAGraph}


def public(cls: type) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(cls).items()
        if not name.startswith(("_", "fake_")) or name == "__init__"
    }


def params(func: Any) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(func).parameters.values() if p.name not in ("self", "cls")]


def assert_accepts(real: Any, fake: Any, where: str) -> None:
    """The real callable takes every parameter the fake takes (by name, as the code passes them
    by keyword after the first), and needs none that the fake lacks."""
    real_params, fake_params = params(real), params(fake)
    names = {p.name for p in real_params}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in real_params)
    for p in fake_params:
        assert p.name in names or open_ended, f"{where}: no parameter {p.name!r}"
    fake_names = {p.name for p in fake_params}
    for p in real_params:
        required = p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        assert not required or p.name in fake_names, f"{where}: requires {p.name!r}"


@pytest.mark.parametrize("name", sorted(public(FakeCuda)))
def test_torch_cuda_has_each_name_the_fake_has(name: str) -> None:
    fake = public(FakeCuda)[name]
    if name == "__init__":
        return  # the fake's own constructor: torch.cuda is a module
    assert hasattr(torch.cuda, name), f"torch.cuda.{name}"
    real = getattr(torch.cuda, name)
    if isinstance(fake, type):
        if issubclass(fake, BaseException):
            assert fake is real  # the fake raises the real exception types
        return  # classes: checked member by member below
    assert_accepts(real, fake, f"torch.cuda.{name}")


@pytest.mark.parametrize(
    ("cls", "member"), [(c, m) for c, fake in CLASSES.items() for m in public(fake)]
)
def test_the_classes_have_each_method_the_fake_has(cls: str, member: str) -> None:
    real_cls, fake = getattr(torch.cuda, cls), public(CLASSES[cls])[member]
    if member == "__init__":  # the code constructs both: torch.cuda.Stream(device=...)
        real = real_cls
    else:
        assert hasattr(real_cls, member), f"torch.cuda.{cls}.{member}"
        real = getattr(real_cls, member)
    assert_accepts(real, fake, f"torch.cuda.{cls}.{member}")


def test_pinned_allocation_and_asynchronous_copies() -> None:
    assert "pin_memory=" in torch.empty.__doc__
    assert "non_blocking" in torch.Tensor.copy_.__doc__
    assert callable(torch.cuda.graph_pool_handle)


def test_the_rest_of_what_the_gpu_branch_uses() -> None:
    assert issubclass(torch.AcceleratorError, Exception)  # cuda_errors: a failed CUDA call
    assert issubclass(torch.cuda.OutOfMemoryError, Exception)
    assert hasattr(torch.version, "cuda")  # None on a CPU-only build
    conv = torch.backends.cudnn.conv  # TF32 off: TorchBackend sets fp32_precision = "ieee"
    before = conv.fp32_precision
    assert before in ("tf32", "ieee", "none")
    try:
        conv.fp32_precision = "ieee"
        assert conv.fp32_precision == "ieee"
    finally:
        conv.fp32_precision = before
