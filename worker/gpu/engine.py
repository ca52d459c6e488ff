"""`cropworker build-engine`: an ONNX saliency network compiled into a TensorRT engine.

    ONNX (FP32, or converted to FP16) ─▶ OnnxParser (every error reported) ─▶ strongly typed
    network ─▶ one optimisation profile ─▶ build (timing cache reused and saved) ─▶ ENGINE,
    ENGINE.json (the sidecar the worker checks)

Precision: TensorRT 11 networks are strongly typed (and 10.x ones are when asked with
STRONGLY_TYPED, as here): each tensor keeps the type the ONNX gives it, and BuilderFlag.FP16 no
longer exists. FP16 therefore means an FP16 ONNX: `--fp16` converts the weights and activations
with ONNX Runtime's float16 converter, keeping the uint8 input, the float32 output and the final
LogSoftmax in FP32 (its sum over the whole map is where half precision would lose the most).

Input shapes: one optimisation profile covers every input the decoder can produce: batch 1..N,
height and width from MIN_INPUT_SIDE (64) to the model's long side (256) in any combination. The
decoder yields 13 shapes (long side 256, short side 64..256 in steps of 32, either orientation);
one profile per aspect bucket would need one execution context per profile and stream, and a
profile switch per batch, to win only what tactics tuned on each bucket's own shape gain over
tactics tuned on the `opt` shape. `opt` is the 4:3 landscape input (most photos) at the batch the
worker fills most (default: the maximum). `benchmarks/gpu_check.sh` times other aspects against
it, which is the measurement that would justify more profiles.

Engines are version-compatible by default: the lean runtime (`tensorrt-lean`, the only TensorRT
runtime that installs from PyPI) runs only such plans, and they keep loading after a TensorRT
minor upgrade. The sidecar records the choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..backend import ModelInfo, resolve_model
from ..decode import MIN_INPUT_SIDE, model_input_size
from ..errors import EngineBuildError, ModelError, SettingsError
from . import trtlib
from .probe import require_gpu
from .sidecar import Shape, Sidecar, sha256_bytes, sidecar_path, write_atomic

log = logging.getLogger(__name__)

# Ops kept in FP32 by the FP16 conversion (see the module docstring).
FP32_OPS = ("LogSoftmax",)
DEFAULT_TIMING_CACHE = "tensorrt-timing.cache"


@dataclass(frozen=True)
class BuildOptions:
    max_batch: int
    opt_batch: int | None = None  # None: max_batch
    fp16: bool = False
    timing_cache: Path | None = None  # None: tensorrt-timing.cache next to the engine
    workspace_mib: int | None = None  # None: TensorRT's default (the whole device)
    version_compatible: bool = True

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise SettingsError(f"max batch must be at least 1, got {self.max_batch}")
        if self.opt_batch is not None and not 1 <= self.opt_batch <= self.max_batch:
            raise SettingsError(f"opt batch must be in 1..{self.max_batch}, got {self.opt_batch}")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise SettingsError(f"workspace must be at least 1 MiB, got {self.workspace_mib}")


def profile_shapes(
    info: ModelInfo, max_batch: int, opt_batch: int | None = None
) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) input shapes (B, H, W, 3) covering every decoder output for `info`."""
    opt_w, opt_h = model_input_size(4, 3, info.long_side)
    return (
        (1, MIN_INPUT_SIDE, MIN_INPUT_SIDE, 3),
        (opt_batch or max_batch, opt_h, opt_w, 3),
        (max_batch, info.long_side, info.long_side, 3),
    )


def read_model(path: Path) -> tuple[ModelInfo, dict[str, str]]:
    """The model's `ModelInfo` and its whole ONNX metadata (through ONNX Runtime)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unrelated exception types
        raise ModelError(f"cannot load {path}: {exc}") from exc
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return ModelInfo.from_metadata(meta, str(path)), meta


def fp16_onnx(path: Path) -> bytes:
    """The model at `path` with FP16 weights and activations; uint8 input, float32 output."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise EngineBuildError("--fp16 needs the `onnx` package (pip install onnx)") from exc
    model = convert_float_to_float16(
        onnx.load(str(path)), keep_io_types=True, op_block_list=list(FP32_OPS)
    )
    data: bytes = model.SerializeToString()
    return data


def build_engine(
    model: str,
    out: Path,
    options: BuildOptions,
    *,
    tensorrt: Any | None = None,
    cudart: Any | None = None,
) -> Sidecar:
    """Build an engine for `model` (a shipped name or an .onnx path) into `out`, and its sidecar
    next to it. `tensorrt` and `cudart` default to the installed packages."""
    path = resolve_model(model)
    source = path.read_bytes()
    info, meta = read_model(path)
    device = require_gpu(cudart).device(0)  # before anything touches TensorRT
    trt = tensorrt if tensorrt is not None else trtlib.load_builder()
    network_bytes = fp16_onnx(path) if options.fp16 else source

    logger, capture = trtlib.capture_log(trt)
    builder = trt.Builder(logger)
    # TensorRT 11 networks are always strongly typed (the flag is accepted and ignored);
    # 10.x needs it to keep the ONNX's types instead of choosing its own.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(network_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"{path}: the ONNX parser reported {len(errors)} error(s): " + " | ".join(errors),
            errors,
        )
    input_name, output_name = _check_network(trt, network, str(path))

    config = builder.create_builder_config()
    lo, opt, hi = profile_shapes(info, options.max_batch, options.opt_batch)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, lo, opt, hi)
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(capture.explain(f"TensorRT rejected the profile {lo}..{hi}"))
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    cache_path = options.timing_cache or out.with_name(DEFAULT_TIMING_CACHE)
    _use_timing_cache(config, cache_path)

    log.info("building %s -> %s (profile %s..%s, opt %s)", path, out, lo, hi, opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(capture.explain(f"TensorRT built no engine from {path}"))
    plan = bytes(serialized)
    sidecar = Sidecar(
        tensorrt_version=str(trt.__version__),
        version_compatible=options.version_compatible,
        gpu_name=device.name,
        compute_capability=device.compute_capability,
        onnx_sha256=sha256_bytes(source),
        engine_sha256=sha256_bytes(plan),
        precision="fp16" if options.fp16 else "fp32",
        input_name=input_name,
        output_name=output_name,
        profile_min=lo,
        profile_opt=opt,
        profile_max=hi,
        model={k: meta[k] for k in ("name", "version", "long_side", "output_stride")},
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_atomic(out, plan)
    write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    sidecar.write(sidecar_path(out))
    return sidecar


def _check_network(trt: Any, network: Any, source: str) -> tuple[str, str]:
    """The input and output names, after checking the network is the saliency contract:
    one (B, H, W, 3) uint8 input and one output."""
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise EngineBuildError(
            f"{source}: expected 1 input and 1 output, found "
            f"{network.num_inputs} and {network.num_outputs}"
        )
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if tensor.dtype != trt.DataType.UINT8 or len(shape) != 4 or shape[3] != 3:
        raise EngineBuildError(
            f"{source}: input {tensor.name!r} is {tensor.dtype} {shape}, "
            "expected uint8 (B, H, W, 3)"
        )
    return str(tensor.name), str(network.get_output(0).name)


def _use_timing_cache(config: Any, path: Path) -> None:
    """Start from the cache at `path` when it exists and fits this GPU and TensorRT; else empty.
    Tactic timing dominates build time; a warm cache makes rebuilds take seconds."""
    previous = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(previous)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    log.warning("timing cache %s was made on another GPU or TensorRT; starting afresh", path)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
