"""Wiring: a worker, its model, metrics server and signal handling, built from `Settings`."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import cv2
from prometheus_client import CollectorRegistry

from ..decode import decode_image, model_input_size
from ..gpu.select import select_backend
from ..pipeline import Cropper, CropResult
from .events import UploadEvent
from .isolation import ProcessDecoder
from .logs import fields
from .metrics import Health, MetricsServer, WorkerMetrics
from .settings import Settings
from .worker import Worker

log = logging.getLogger(__name__)


def warm_up_shapes(long_side: int) -> list[tuple[int, int]]:
    """Network input sizes (w, h) of 4:3 landscape and portrait photos, the common case, for a
    model whose input has this long side (each rung of the ladder has its own)."""
    return [model_input_size(4, 3, long_side), model_input_size(3, 4, long_side)]


@dataclass
class Service:
    settings: Settings
    worker: Worker
    server: MetricsServer
    registry: CollectorRegistry
    health: Health


def build(
    settings: Settings,
    on_result: Callable[[UploadEvent, CropResult], None] | None = None,
) -> Service:
    """Load the model and assemble a worker and its metrics server (neither started)."""
    # Decoding already runs on `decode_threads` threads; OpenCV's own thread pool on top of them
    # would oversubscribe the cores and slow inference down.
    cv2.setNumThreads(1)
    chosen = select_backend(
        settings.backend,
        model=settings.model,
        threads=settings.threads,
        engine=settings.engine,
        require_gpu=settings.require_gpu,
        gpu_decode=settings.gpu_decode,
        cuda_precision=settings.cuda_precision,
        limits=settings.limits,
    )
    log.info(
        "inference backend",
        extra=fields(backend=chosen.kind, gpu_decode=chosen.decoder is not None),
    )
    backend = chosen.backend
    backend.warm_up(warm_up_shapes(backend.info.long_side))
    decoder = chosen.decoder
    if settings.decode_isolation:
        if decoder is None:
            decode = partial(decode_image, long_side=backend.info.long_side, limits=settings.limits)
            decoder = ProcessDecoder(decode, settings.prepare_timeout_s)
        else:
            log.warning("decode_isolation applies to CPU decoding only; nvJPEG runs in-process")
    cropper = Cropper(
        backend,
        aspects=settings.aspects,
        limits=settings.limits,
        max_batch=settings.max_batch,
        decoder=decoder,
    )
    registry = CollectorRegistry()
    health = Health(loop_timeout_s=settings.loop_timeout_s)
    metrics = WorkerMetrics(registry, model=backend.info.tag)
    server = MetricsServer(registry, health, settings.metrics_host, settings.metrics_port)
    worker = Worker(settings, cropper, metrics, health=health, on_result=on_result)
    return Service(settings, worker, server, registry, health)


def serve(settings: Settings) -> int:
    """`cropworker run`: consume until SIGTERM or SIGINT, then drain and exit 0."""
    service = build(settings)
    service.server.start()
    log.info("serving metrics", extra=fields(url=service.server.url))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.worker.stop())
    try:
        service.worker.run()
    finally:
        service.server.stop()
        if isinstance(decoder := service.worker.cropper.decoder, ProcessDecoder):
            decoder.close()
    return 0
