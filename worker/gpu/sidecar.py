"""The sidecar JSON written next to every engine, and the check the worker makes before loading.

A TensorRT engine is only valid for the GPU model (compute capability) and TensorRT version it
was built with, and for the exact network it was built from. The sidecar records those facts
(plus the optimisation profile and the model's metadata), so that a worker refuses a mismatched
engine with a message saying what differs, instead of failing inside TensorRT or silently
serving another model's saliency.

    ENGINE        the serialized plan
    ENGINE.json   {"format": 1, "tensorrt": {...}, "gpu": {...}, "onnx": {...}, "engine": {...},
                   "input": {"name", "shape", "min", "opt", "max"}, "output": {...},
                   "batch": {"min", "opt", "max"}, "built_at"}
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backend import ModelInfo
from ..decode import MIN_INPUT_SIDE
from ..errors import EngineMismatchError
from .cuda import DeviceInfo

SIDECAR_FORMAT = 1
Shape = tuple[int, int, int, int]  # (B, H, W, 3)


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_version(text: str) -> tuple[int, ...]:
    """ "11.4.0.106" -> (11, 4, 0, 106); non-numeric parts end the tuple."""
    parts: list[int] = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def tensorrt_compatible(built: str, running: str, version_compatible: bool) -> bool:
    """Can a runtime of version `running` load a plan built by `built`? Version-compatible plans
    load in the same or a later release of the same major version; others only in the exact
    release that built them."""
    b, r = parse_version(built), parse_version(running)
    if not b or not r:
        return False
    if version_compatible:
        return r[0] == b[0] and r >= b
    return r == b


@dataclass(frozen=True)
class Sidecar:
    tensorrt_version: str
    version_compatible: bool
    gpu_name: str
    compute_capability: str
    onnx_sha256: str  # of the ONNX the worker is configured with (before any FP16 conversion)
    engine_sha256: str
    precision: str  # "fp32" or "fp16"
    input_name: str
    output_name: str
    profile_min: Shape
    profile_opt: Shape
    profile_max: Shape
    model: dict[str, str] = field(default_factory=dict)  # name, version, long_side, stride
    built_at: str = ""

    @property
    def batch_range(self) -> tuple[int, int, int]:
        return self.profile_min[0], self.profile_opt[0], self.profile_max[0]

    @property
    def max_batch(self) -> int:
        return self.profile_max[0]

    def model_info(self, source: str) -> ModelInfo:
        return ModelInfo.from_metadata(self.model, source)

    def to_json(self) -> dict[str, Any]:
        lo, opt, hi = self.batch_range
        return {
            "format": SIDECAR_FORMAT,
            "tensorrt": {
                "version": self.tensorrt_version,
                "version_compatible": self.version_compatible,
            },
            "gpu": {"name": self.gpu_name, "compute_capability": self.compute_capability},
            "onnx": {"sha256": self.onnx_sha256, "precision": self.precision, "model": self.model},
            "engine": {"sha256": self.engine_sha256},
            "input": {
                "name": self.input_name,
                "shape": [-1, -1, -1, 3],
                "min": list(self.profile_min),
                "opt": list(self.profile_opt),
                "max": list(self.profile_max),
            },
            "output": {"name": self.output_name},
            "batch": {"min": lo, "opt": opt, "max": hi},
            "built_at": self.built_at,
        }

    @classmethod
    def from_json(cls, doc: Any, source: str) -> Sidecar:
        try:
            if doc["format"] != SIDECAR_FORMAT:
                raise EngineMismatchError(
                    f"{source}: sidecar format {doc['format']}, this worker reads {SIDECAR_FORMAT}"
                )
            return cls(
                tensorrt_version=str(doc["tensorrt"]["version"]),
                version_compatible=bool(doc["tensorrt"]["version_compatible"]),
                gpu_name=str(doc["gpu"]["name"]),
                compute_capability=str(doc["gpu"]["compute_capability"]),
                onnx_sha256=str(doc["onnx"]["sha256"]),
                engine_sha256=str(doc["engine"]["sha256"]),
                precision=str(doc["onnx"]["precision"]),
                input_name=str(doc["input"]["name"]),
                output_name=str(doc["output"]["name"]),
                profile_min=_shape(doc["input"]["min"]),
                profile_opt=_shape(doc["input"]["opt"]),
                profile_max=_shape(doc["input"]["max"]),
                model={str(k): str(v) for k, v in doc["onnx"]["model"].items()},
                built_at=str(doc.get("built_at", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineMismatchError(f"{source}: malformed sidecar ({exc!r})") from exc

    def write(self, path: Path) -> None:
        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())

    @classmethod
    def read(cls, path: Path) -> Sidecar:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise EngineMismatchError(
                f"no sidecar {path}: only engines built by `cropworker build-engine` (which "
                "writes it) can be loaded"
            ) from exc
        except (OSError, ValueError) as exc:
            raise EngineMismatchError(f"{path}: unreadable sidecar ({exc})") from exc
        return cls.from_json(doc, str(path))


def _shape(value: Any) -> Shape:
    dims = tuple(int(v) for v in value)
    if len(dims) != 4:
        raise ValueError(f"expected 4 dimensions, got {list(dims)}")
    return dims


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file and rename it, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def check(
    sidecar: Sidecar,
    *,
    source: str,
    tensorrt_version: str,
    device: DeviceInfo,
    onnx_sha256: str,
    engine_sha256: str,
) -> None:
    """Raise `EngineMismatchError` listing every way `sidecar` does not fit this worker."""
    problems = []
    if not tensorrt_compatible(
        sidecar.tensorrt_version, tensorrt_version, sidecar.version_compatible
    ):
        kind = "version-compatible " if sidecar.version_compatible else ""
        problems.append(
            f"built by TensorRT {sidecar.tensorrt_version} ({kind}plan), "
            f"this worker runs TensorRT {tensorrt_version}"
        )
    if sidecar.compute_capability != device.compute_capability:
        problems.append(
            f"built for compute capability {sidecar.compute_capability} "
            f"({sidecar.gpu_name}), this GPU is {device.compute_capability} ({device.name})"
        )
    elif sidecar.gpu_name != device.name:
        # Same architecture loads, but tactics were timed on another model of GPU.
        problems.append(f"built on a {sidecar.gpu_name}, this GPU is a {device.name}")
    if sidecar.onnx_sha256 != onnx_sha256:
        problems.append(
            f"built from ONNX sha256 {sidecar.onnx_sha256[:12]}..., the configured model is "
            f"{onnx_sha256[:12]}..."
        )
    if sidecar.engine_sha256 != engine_sha256:
        problems.append("the engine file is not the one the sidecar describes (sha256 differs)")
    try:
        info = sidecar.model_info(source)
    except Exception as exc:
        problems.append(str(exc))
    else:
        problems += _coverage_problems(sidecar, info)
    if problems:
        raise EngineMismatchError(
            f"{source} cannot be used here: "
            + "; ".join(problems)
            + ". Rebuild it on this machine with `cropworker build-engine`."
        )


def _coverage_problems(sidecar: Sidecar, info: ModelInfo) -> list[str]:
    """Does the profile admit every input the decoder can produce for this model?"""
    lo, hi = sidecar.profile_min, sidecar.profile_max
    problems = []
    if lo[0] != 1:
        problems.append(f"the profile's smallest batch is {lo[0]}, not 1")
    if max(lo[1], lo[2]) > MIN_INPUT_SIDE:
        problems.append(f"the profile's smallest input {lo[1]}x{lo[2]} exceeds {MIN_INPUT_SIDE}")
    if hi[1] < info.long_side or hi[2] < info.long_side:
        problems.append(f"the profile's largest input {hi[1]}x{hi[2]} is under {info.long_side}")
    return problems
