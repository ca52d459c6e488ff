"""The GPU check behind gpu_check.sh: one prepared run that measures the GPU path wherever a GPU
machine is lent, within 8 minutes.

    bash benchmarks/gpu_check.sh          # on a machine with an NVIDIA GPU; writes $OUT

Stages, most wanted first (each recorded as ok / failed / skipped with its figures; a failed
stage does not stop the others; stages left when --budget-s runs out are skipped):

- cuda plumbing: pinned and device memory, async copies on two streams;
- cuda model MODEL, for every model of the ladder (and vanilla): PyTorch on CUDA (TorchBackend) in
  fp16 and fp32, images/s per batch size, and each sample photo against ONNX Runtime on the CPU
  (largest log-density difference, same crops);
- gpu decode: nvJPEG (nvImageCodec) against OpenCV at 1200x900 and 4000x3000, images/s;
- worker: the whole worker against the embedded broker on this machine: one GPU worker
  (`--backend cuda`), then CPU-only workers, 1, 2, 4 and 8 processes in one group: uploads/s
  draining a backlog, p99 at a steady half of that, and for the GPU worker the network's time
  against decoding's (from its own metrics);
- tensorrt build / speed / accuracy: only where TensorRT's builder is installed ("skipped: no
  builder" otherwise); onnxruntime cuda likewise; cpu baseline.

Exit status: 0 all ran stages passed, 1 a check failed, 3 no usable GPU.
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

from cropworker.backend import LADDER, OnnxBackend
from cropworker.decode import decode_image, model_input_size
from cropworker.gpu import trtlib
from cropworker.gpu.cuda import Cuda, host_view
from cropworker.gpu.cuda import load_runtime as load_cudart
from cropworker.gpu.engine import BuildOptions, build_engine
from cropworker.gpu.probe import probe_gpu
from cropworker.gpu.trt_backend import TensorRTBackend
from cropworker.pipeline import Cropper

BATCHES = (1, 2, 4, 8, 16, 32)
CUDA_BATCHES = (1, 4, 16, 32, 64, 128, 256)
ASPECTS = {"4:3": (4, 3), "16:9": (16, 9), "1:1": (1, 1), "3:4": (3, 4), "9:16": (9, 16)}
SAMPLES = sorted(Path("samples").glob("*.jpg"))
LONG_SIDE = 256
MODELS = (*LADDER, "vanilla")
TOLERANCE = 1e-3  # largest |log-density difference| against ONNX Runtime on the CPU (#17)
DECODE_SIZES = ((1200, 900), (4000, 3000))
CPU_PROCESSES = (1, 2, 4, 8)


class Check:
    """Runs stages within a budget; `saved` is called after each, so that whatever finished is
    on disk even if the run is killed at its hard time limit."""

    def __init__(self, budget_s: float, saved: Callable[[], None] = lambda: None) -> None:
        self.deadline = time.monotonic() + budget_s
        self.stages: dict[str, dict[str, Any]] = {}
        self.saved = saved

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
        self.saved()
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


def batch(
    n: int, aspect: tuple[int, int] = (4, 3), seed: int = 0, long_side: int = LONG_SIDE
) -> np.ndarray:
    w, h = model_input_size(*aspect, long_side)
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def torch_backend(model: str, precision: str) -> Any:
    from cropworker.gpu.torch_backend import TorchBackend

    return TorchBackend(model, device="cuda", precision=precision)


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


def cuda_model(
    model: str, backends: Callable[[str, str], Any], batches: tuple[int, ...]
) -> dict[str, Any]:
    """One model on PyTorch/CUDA, fp16 and fp32: images/s per batch size at a 4:3 input, and
    every sample photo against ONNX Runtime on the CPU."""
    cpu = OnnxBackend(model, threads=1)
    decoded = [decode_image(p.read_bytes(), cpu.info.long_side) for p in SAMPLES]
    reference = [cpu.infer(image.rgb[None]) for image in decoded]
    cpu_crops = Cropper(cpu).crop_decoded(decoded)
    out: dict[str, Any] = {"long_side": cpu.info.long_side}
    for precision in ("fp16", "fp32"):
        backend = backends(model, precision)
        x = batch(max(batches), long_side=cpu.info.long_side)
        rates = {}
        for b in batches:
            rates[str(b)] = images_per_s(backend.infer, x[:b], runs=10)
        worst = max(
            float(np.abs(backend.infer(image.rgb[None]) - want).max())
            for image, want in zip(decoded, reference, strict=True)
        )
        crops = Cropper(backend).crop_decoded(decoded)
        best = max(rates, key=lambda b: rates[b])
        out[precision] = {
            "images_per_s_by_batch": rates,
            "best": {"batch": int(best), "images_per_s": rates[best]},
            "max_abs_log_density_diff": worst,
            "within_tolerance": worst <= TOLERANCE,
            "same_crops": sum(a.crops == b.crops for a, b in zip(cpu_crops, crops, strict=True)),
            "photos": len(decoded),
        }
    return out


def gpu_decode_sizes(nvimgcodec: Any, cudart: Any) -> dict[str, Any]:
    """nvJPEG against OpenCV on camera-like JPEGs of each size, to the default model's input."""
    from crop_speed import camera_like_jpeg

    from cropworker.gpu.nvjpeg import NvJpegDecoder, load_nvimgcodec

    try:
        codec = nvimgcodec if nvimgcodec is not None else load_nvimgcodec()
    except Exception as exc:
        raise Skip(str(exc)) from exc
    long_side = OnnxBackend(threads=1).info.long_side
    decoder = NvJpegDecoder(long_side, nvimgcodec=codec, cudart=cudart)
    rows = {}
    for width, height in DECODE_SIZES:
        data = camera_like_jpeg(width, height)
        gpu = images_per_s(decoder, data, runs=10, count=1)
        cpu = images_per_s(partial(decode_image, long_side=long_side), data, runs=10, count=1)
        rows[f"{width}x{height}"] = {"gpu_images_per_s": gpu, "cpu_images_per_s": cpu}
    return {"per_size": rows}


def torchvision_decode() -> dict[str, Any]:
    """nvJPEG through torchvision (`decode_jpeg(..., device="cuda")`, batched), which the GPU
    machine has without carrying anything: how fast the GPU itself decodes, full size."""
    try:
        import torch
        from torchvision.io import decode_jpeg
    except ImportError as exc:
        raise Skip(f"no torchvision here ({exc})") from exc
    if not torch.cuda.is_available():
        raise Skip("torch sees no CUDA device")
    from crop_speed import camera_like_jpeg

    rows = {}
    for width, height in DECODE_SIZES:
        data = torch.frombuffer(bytearray(camera_like_jpeg(width, height)), dtype=torch.uint8)
        many = [data] * 32

        def decode(batch: list[Any]) -> Any:
            out = decode_jpeg(batch, device="cuda")
            torch.cuda.synchronize()
            return out

        rows[f"{width}x{height}"] = {"images_per_s_batch32": images_per_s(decode, many, runs=5)}
    return {"per_size": rows}


def worker_run(
    processes: int, env: dict[str, str], model: str, backlog: int, steady_s: float
) -> dict[str, Any]:
    """`processes` worker processes in one group against the embedded broker: uploads/s
    draining `backlog` 1200x900 JPEG uploads, p99 at a steady half of that rate, and the
    network's and decoding's time from the workers' own metrics."""
    import worker_throughput as wt

    with tempfile.TemporaryDirectory() as tmp, wt.bench_session(Path(tmp), model, env) as bench:
        name = f"p{processes}"
        with wt.workers(bench, name, processes, wt.DEFAULT_BATCH) as started:
            before = [wt.scrape(port) for _, port in started]
            drained = wt.drain(bench, name, started, wt.DEFAULT_BATCH, backlog)
            after = [wt.scrape(port) for _, port in started]
            held = wt.steady(bench, name, started[0][1], drained.rate / 2, steady_s)

    def spent(metric: str) -> float:
        return sum(a[metric] - b[metric] for a, b in zip(after, before, strict=True))

    network, decode = (
        spent("cropworker_inference_seconds_sum"),
        spent("cropworker_decode_seconds_sum"),
    )
    return {
        "processes": processes,
        "uploads_per_s": drained.rate,
        "mean_batch": drained.mean_batch,
        "cores_busy": drained.cores_busy,
        "steady_offered": held.offered,
        "p99_ms": held.p99,
        "network_s": network,
        "decode_s": decode,
        "network_over_decode": network / decode if decode else None,
    }


def tensorrt_engines(work: Path, tensorrt: Any, cudart: Any, max_batch: int) -> dict[str, Any]:
    if tensorrt is None:
        try:
            tensorrt = trtlib.load_builder()
        except Exception as exc:
            raise Skip(f"no builder: TensorRT's builder is not installed here ({exc})") from exc
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
    backends: Callable[[str, str], Any] = torch_backend,
    models: tuple[str, ...] = MODELS,
    cuda_batches: tuple[int, ...] = CUDA_BATCHES,
    gpu_worker_env: dict[str, str] | None = None,
    cpu_processes: tuple[int, ...] = CPU_PROCESSES,
    backlog: int = 1500,
    steady_s: float = 8.0,
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")

    check = Check(budget_s, save)
    probe = probe_gpu(cudart)
    report.update(device=probe.reason, driver=probe.driver_version, stages=check.stages)
    status = 3
    if not probe.available:
        print(f"gpu_check: no GPU: {probe.reason}", flush=True)
    if probe.available:
        runtime = cudart if cudart is not None else load_cudart()
        check.stage("cuda plumbing", lambda: cuda_plumbing(Cuda(runtime), copy_bytes))
        for model in models:
            check.stage(f"cuda model {model}", partial(cuda_model, model, backends, cuda_batches))
        check.stage("gpu decode", lambda: gpu_decode_sizes(nvimgcodec, runtime))
        check.stage("gpu decode (torchvision)", torchvision_decode)
        gpu_env = gpu_worker_env if gpu_worker_env is not None else {"CROPWORKER_BACKEND": "cuda"}
        check.stage("worker gpu", partial(worker_run, 1, gpu_env, "default", backlog, steady_s))
        cpu_env = {"CROPWORKER_BACKEND": "cpu"}
        for n in cpu_processes:
            check.stage(
                f"worker cpu x{n}", partial(worker_run, n, cpu_env, "default", backlog, steady_s)
            )
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
        check.stage("cpu baseline", cpu_baseline)
        status = 1 if any(s["status"] == "failed" for s in check.stages.values()) else 0
        report["targets"] = targets(check.stages)
        if report["targets"] and not all(report["targets"].values()):
            status = status or 1
    report["exit_status"] = status
    save()
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return status


def targets(stages: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """#17's targets, where their stages ran: every model served in fp32 (the default precision)
    within TOLERANCE of the CPU, `large` at 2,000 images/s or more at its best fp32 batch, and the
    GPU worker decode-bound (network time under 20% of decoding time). fp16's figures are
    reported beside them, not held to the tolerance (it cannot meet it: log-densities near -8
    are 0.008 apart in fp16)."""
    found: dict[str, bool] = {}
    for name, stage in stages.items():
        if name.startswith("cuda model ") and stage["status"] == "ok":
            found[f"{name} fp32 within {TOLERANCE:g}"] = stage["fp32"]["within_tolerance"]
    large = stages.get("cuda model large", {})
    if large.get("status") == "ok":
        found["large fp32 >= 2000 images/s"] = large["fp32"]["best"]["images_per_s"] >= 2000
    gpu = stages.get("worker gpu", {})
    if gpu.get("status") == "ok" and gpu.get("network_over_decode") is not None:
        found["gpu worker decode-bound (network < 20% of decode)"] = (
            gpu["network_over_decode"] < 0.2
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/gpu_check"))
    parser.add_argument("--budget-s", type=float, default=400.0)
    parser.add_argument("--max-batch", type=int, default=32)
    args = parser.parse_args(argv)
    return run(args.out, args.budget_s, args.max_batch)


if __name__ == "__main__":
    sys.exit(main())
