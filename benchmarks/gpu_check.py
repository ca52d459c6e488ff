"""The GPU check behind gpu_check.sh: the CUDA plumbing end to end, TensorRT engines built and
timed per batch size, their outputs against ONNX Runtime on the CPU, and GPU JPEG decoding.

    bash benchmarks/gpu_check.sh          # on a machine with an NVIDIA GPU; writes $OUT

Stages run in order, each recorded as ok / failed / skipped with its figures; a failed stage
does not stop the others, and stages left when --budget-s runs out are skipped. Exit status: 0
all ran stages passed, 1 a check failed, 3 no usable GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cropworker.backend import OnnxBackend
from cropworker.decode import decode_image, model_input_size
from cropworker.gpu import trtlib
from cropworker.gpu.cuda import Cuda, host_view
from cropworker.gpu.cuda import load_runtime as load_cudart
from cropworker.gpu.engine import BuildOptions, build_engine
from cropworker.gpu.probe import probe_gpu
from cropworker.gpu.trt_backend import TensorRTBackend
from cropworker.pipeline import Cropper

BATCHES = (1, 2, 4, 8, 16, 32)
ASPECTS = {"4:3": (4, 3), "16:9": (16, 9), "1:1": (1, 1), "3:4": (3, 4), "9:16": (9, 16)}
SAMPLES = sorted(Path("samples").glob("*.jpg"))
LONG_SIDE = 256


class Check:
    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s
        self.stages: dict[str, dict[str, Any]] = {}

    def stage(self, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.stages[name] = {"status": "skipped", "reason": "time budget spent"}
            return self.stages[name]
        start = time.monotonic()
        print(f"== {name} ({left:.0f} s left)", flush=True)
        try:
            result = {"status": "ok", **run()}
        except Skip as exc:
            result = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:
            traceback.print_exc()
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.monotonic() - start, 1)
        self.stages[name] = result
        print(json.dumps(result, default=str), flush=True)
        return result


class Skip(Exception):
    pass


def images_per_s(infer: Callable[[Any], Any], x: Any, runs: int = 20, count: int = 0) -> float:
    """`count` (default len(x)) images per call of `infer(x)`, median of `runs` calls."""
    for _ in range(3):
        infer(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        infer(x)
        times.append(time.perf_counter() - start)
    return (count or len(x)) / statistics.median(times)


def batch(n: int, aspect: tuple[int, int] = (4, 3), seed: int = 0) -> np.ndarray:
    w, h = model_input_size(*aspect, LONG_SIDE)
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------- stages


def cuda_plumbing(cuda: Cuda, nbytes: int) -> dict[str, Any]:
    """Pinned and device memory, async copies on two non-blocking streams, synchronisation."""
    streams = [cuda.create_stream() for _ in range(2)]
    owned: list[tuple[Callable[[int], None], int]] = []
    try:
        gbps = {}
        for i, stream in enumerate(streams):
            host, back, device = (
                cuda.malloc_host(nbytes),
                cuda.malloc_host(nbytes),
                cuda.malloc(nbytes),
            )
            owned += [(cuda.free_host, host), (cuda.free_host, back), (cuda.free, device)]
            pattern = np.random.default_rng(i).integers(0, 256, nbytes, dtype=np.uint8)
            host_view(host, nbytes)[:] = pattern
            start = time.perf_counter()
            cuda.copy_to_device(device, host, nbytes, stream)
            cuda.synchronize(stream)
            up = time.perf_counter() - start
            start = time.perf_counter()
            cuda.copy_to_host(back, device, nbytes, stream)
            cuda.synchronize(stream)
            down = time.perf_counter() - start
            if not np.array_equal(host_view(back, nbytes), pattern):
                raise AssertionError(f"stream {i}: the bytes that came back differ")
            gbps[f"stream{i}"] = {"h2d_GBps": nbytes / up / 1e9, "d2h_GBps": nbytes / down / 1e9}
        free, total = cuda.mem_info()
        return {"copies": gbps, "free_GiB": free / 2**30, "total_GiB": total / 2**30}
    finally:
        for release, pointer in reversed(owned):
            release(pointer)
        for stream in streams:
            cuda.destroy_stream(stream)


def tensorrt_engines(work: Path, tensorrt: Any, cudart: Any, max_batch: int) -> dict[str, Any]:
    if tensorrt is None:
        try:
            tensorrt = trtlib.load_builder()
        except Exception as exc:
            raise Skip(f"no TensorRT builder here ({exc})") from exc
    built = {}
    for precision in ("fp32", "fp16"):
        out = work / f"vanilla-{precision}.engine"
        start = time.monotonic()
        options = BuildOptions(max_batch=max_batch, fp16=precision == "fp16")
        sidecar = build_engine("vanilla", out, options, tensorrt=tensorrt, cudart=cudart)
        built[precision] = {
            "path": str(out),
            "build_s": round(time.monotonic() - start, 1),
            "MB": out.stat().st_size / 1e6,
            "tensorrt": sidecar.tensorrt_version,
        }
    return {"engines": built}


def tensorrt_speed(engine: Path, tensorrt: Any, cudart: Any) -> dict[str, Any]:
    with TensorRTBackend(engine, "vanilla", tensorrt=tensorrt, cudart=cudart) as backend:
        per_batch = {
            str(b): images_per_s(backend.infer, batch(b)) for b in BATCHES if b <= backend.max_batch
        }
        b = min(8, backend.max_batch)
        per_aspect = {name: images_per_s(backend.infer, batch(b, a)) for name, a in ASPECTS.items()}
        many = batch(8 * backend.max_batch)
        two_streams = images_per_s(backend.infer, many, runs=5)
    with TensorRTBackend(engine, "vanilla", streams=1, tensorrt=tensorrt, cudart=cudart) as one:
        one_stream = images_per_s(one.infer, many, runs=5)
    return {
        "images_per_s_by_batch": per_batch,
        f"images_per_s_by_aspect_batch{b}": per_aspect,
        f"images_per_s_{len(many)}_images": {"2 streams": two_streams, "1 stream": one_stream},
    }


def tensorrt_accuracy(engine: Path, tensorrt: Any, cudart: Any) -> dict[str, Any]:
    """Each sample photo through ONNX Runtime (CPU) and the engine: log-density difference and
    whether the crop boxes are the same."""
    cpu = OnnxBackend("vanilla", threads=1)
    with TensorRTBackend(engine, "vanilla", tensorrt=tensorrt, cudart=cudart) as gpu:
        worst, same_crops = 0.0, 0
        decoded = [decode_image(p.read_bytes(), LONG_SIDE) for p in SAMPLES]
        for image in decoded:
            x = image.rgb[None]
            worst = max(worst, float(np.abs(cpu.infer(x) - gpu.infer(x)).max()))
        a = Cropper(cpu).crop_decoded(decoded)
        b = Cropper(gpu).crop_decoded(decoded)
        same_crops = sum(r.crops == s.crops for r, s in zip(a, b, strict=True))
    return {"photos": len(decoded), "max_abs_log_density_diff": worst, "same_crops": same_crops}


def onnxruntime_cuda() -> dict[str, Any]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip(f"ONNX Runtime here has {ort.get_available_providers()}")
    from cropworker.backend import resolve_model

    session = ort.InferenceSession(
        str(resolve_model("vanilla")), providers=["CUDAExecutionProvider"]
    )

    def run(x: np.ndarray) -> Any:
        return session.run(None, {"image": x})

    return {"images_per_s_by_batch": {str(b): images_per_s(run, batch(b)) for b in BATCHES}}


def cpu_baseline() -> dict[str, Any]:
    backend = OnnxBackend("vanilla", threads=1)
    return {"images_per_s_batch8_1thread": images_per_s(backend.infer, batch(8), runs=5)}


def gpu_decode(nvimgcodec: Any, cudart: Any) -> dict[str, Any]:
    from cropworker.gpu.nvjpeg import NvJpegDecoder, load_nvimgcodec

    try:
        codec = nvimgcodec if nvimgcodec is not None else load_nvimgcodec()
    except Exception as exc:
        raise Skip(str(exc)) from exc
    decoder = NvJpegDecoder(LONG_SIDE, nvimgcodec=codec, cudart=cudart)
    rows = {}
    for path in SAMPLES:
        data = path.read_bytes()
        want = decode_image(data, LONG_SIDE)
        got = decoder(data)
        if got.rgb.shape != want.rgb.shape or (got.width, got.height) != (want.width, want.height):
            raise AssertionError(f"{path.name}: {got.rgb.shape} vs {want.rgb.shape}")
        gpu_ms = 1000 / images_per_s(decoder, data, runs=10, count=1)
        cpu_ms = 1000 / images_per_s(partial(decode_image, long_side=LONG_SIDE), data, 10, 1)
        diff = float(np.abs(got.rgb.astype(int) - want.rgb.astype(int)).mean())
        rows[path.name] = {"gpu_ms": gpu_ms, "cpu_ms": cpu_ms, "mean_abs_pixel_diff": diff}
    return {"per_image": rows}


# --------------------------------------------------------------------------------- main


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU check: {report['device']}", ""]
    for name, stage in report["stages"].items():
        lines.append(f"- **{name}**: {stage['status']} ({stage.get('seconds', 0)} s)")
        detail = {k: v for k, v in stage.items() if k not in ("status", "seconds")}
        if detail:
            lines.append(f"  `{json.dumps(detail, default=_round)}`")
    return "\n".join(lines) + "\n"


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else str(value)


def run(
    out: Path,
    budget_s: float,
    max_batch: int,
    *,
    cudart: Any = None,
    tensorrt: Any = None,
    nvimgcodec: Any = None,
    copy_bytes: int = 64 << 20,
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    check = Check(budget_s)
    probe = probe_gpu(cudart)
    report: dict[str, Any] = {
        "device": probe.reason,
        "driver": probe.driver_version,
        "stages": check.stages,
    }
    status = 3
    if probe.available:
        runtime = cudart if cudart is not None else load_cudart()
        check.stage("cuda plumbing", lambda: cuda_plumbing(Cuda(runtime), copy_bytes))
        work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        built = check.stage(
            "tensorrt build", lambda: tensorrt_engines(work, tensorrt, runtime, max_batch)
        )
        for precision, info in built.get("engines", {}).items():
            engine = Path(info["path"])
            speed = partial(tensorrt_speed, engine, tensorrt, runtime)
            check.stage(f"tensorrt {precision} speed", speed)
            accuracy = partial(tensorrt_accuracy, engine, tensorrt, runtime)
            check.stage(f"tensorrt {precision} vs onnxruntime", accuracy)
        check.stage("onnxruntime cuda", onnxruntime_cuda)
        check.stage("gpu decode", lambda: gpu_decode(nvimgcodec, runtime))
        check.stage("cpu baseline", cpu_baseline)
        status = 1 if any(s["status"] == "failed" for s in check.stages.values()) else 0
    report["exit_status"] = status
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/gpu_check"))
    parser.add_argument("--budget-s", type=float, default=360.0)
    parser.add_argument("--max-batch", type=int, default=32)
    args = parser.parse_args(argv)
    return run(args.out, args.budget_s, args.max_batch)


if __name__ == "__main__":
    sys.exit(main())
