"""Inference backends: a batch of uint8 RGB images in, fixation log-densities out.

Every backend runs the same ONNX file, which describes itself in its metadata (name, version,
input long side, output stride). The CPU backend is ONNX Runtime; the TensorRT backend (GPU)
implements the same protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ModelError

log = logging.getLogger(__name__)

# The shipped ladder, cheapest first; users choose a rung by cost (the cards in the zoo,
# worker/zoo/*.md, give each one's crops, MACs and milliseconds).
LADDER = ("fast", "default", "large")
DEFAULT_MODEL = "default"
# Names that keep working: `student` (student@5, the default before the ladder) is the same
# network as `fast`, so a fleet sized for it keeps its cost; `teacher` is what `large` is.
ALIASES = {"student": "fast", "teacher": "large"}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    long_side: int
    output_stride: int

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> ModelInfo:
        try:
            return cls(
                meta["name"], meta["version"], int(meta["long_side"]), int(meta["output_stride"])
            )
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{source}: ONNX metadata lacks a valid {exc}") from exc


class Backend(Protocol):
    info: ModelInfo

    def infer(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB -> (B, H / stride, W / stride) float32 log-density."""
        ...


def shipped_models() -> list[str]:
    zoo = resources.files("cropworker") / "zoo"
    return sorted(p.name.removesuffix(".onnx") for p in zoo.iterdir() if p.name.endswith(".onnx"))


def resolve_model(name_or_path: str) -> Path:
    """A shipped model's name ("default"), an alias of one ("student"), or a path to an .onnx
    file."""
    if name_or_path.endswith(".onnx"):
        path = Path(name_or_path)
    else:
        name = ALIASES.get(name_or_path, name_or_path)
        path = Path(str(resources.files("cropworker") / "zoo" / f"{name}.onnx"))
    if not path.is_file():
        shipped = ", ".join(shipped_models())
        aliases = ", ".join(f"{a} = {n}" for a, n in ALIASES.items())
        raise ModelError(f"no model {name_or_path!r} (shipped: {shipped}; aliases: {aliases})")
    return path


class OnnxBackend:
    """ONNX Runtime on the CPU. `threads` sets intra-op parallelism explicitly: the default
    (all cores) fights with decoding threads and with other workers on the same node."""

    def __init__(self, model: str = DEFAULT_MODEL, threads: int = 1) -> None:
        import onnxruntime as ort

        path = resolve_model(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own unrelated exception types
            raise ModelError(f"cannot load {path}: {exc}") from exc
        self.info = ModelInfo.from_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(path)
        )
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, images: np.ndarray) -> np.ndarray:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected (B, H, W, 3) uint8, got {images.shape} {images.dtype}")
        out: np.ndarray = self.session.run(None, {self.input_name: images})[0]
        return out

    def warm_up(self, shapes: list[tuple[int, int]], batch: int = 1) -> None:
        """Run each (w, h) input shape once so the first real request pays no allocation."""
        for w, h in shapes:
            self.infer(np.zeros((batch, h, w, 3), np.uint8))
