"""The composition root: a worker, its model, metrics server and signal handling, built from
`Settings`; `build` is the one place a worker is assembled."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import cv2
from prometheus_client import CollectorRegistry

from ..backend import Backend
from ..decode import decode_image, model_input_size
from ..gpu.select import Decoder, select_backend
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
    """A worker and its metrics server, assembled by `build` (neither started)."""

    settings: Settings
    worker: Worker
    server: MetricsServer
    registry: CollectorRegistry
    health: Health

    def close(self) -> None:
        """Release what `build` opened: the metrics port, decoder child processes."""
        self.server.stop()
        if isinstance(decoder := self.worker.cropper.decoder, ProcessDecoder):
            decoder.close()


def build(
    settings: Settings,
    *,
    backend: Backend | None = None,
    cropper: Cropper | None = None,
    on_result: Callable[[UploadEvent, CropResult], None] | None = None,
    **injected: Any,
) -> Service:
    """The one composition root: `cropworker run`, the demo, the tests and the benchmarks all
    assemble a worker here. The network comes from `settings` (backend, model, engine, ...)
    unless a `backend`, or a whole `cropper`, is given; `injected` goes to `Worker` as is
    (fetcher, consumer_factory, producer_factory, clock, wall_ms)."""
    if cropper is None:
        cropper = _cropper(settings, backend)
    registry = CollectorRegistry()
    clock = injected.get("clock", time.monotonic)
    health = Health(loop_timeout_s=settings.loop_timeout_s, clock=clock)
    metrics = WorkerMetrics(registry, model=cropper.backend.info.tag)
    server = MetricsServer(registry, health, settings.metrics_host, settings.metrics_port)
    worker = Worker(settings, cropper, metrics, health=health, on_result=on_result, **injected)
    return Service(settings, worker, server, registry, health)


def _cropper(settings: Settings, backend: Backend | None) -> Cropper:
    """The network chosen from `settings` and warmed up (a given `backend` is used as is), and
    its decoder."""
    # Decoding already runs on `decode_threads` threads; OpenCV's own thread pool on top of them
    # would oversubscribe the cores and slow inference down.
    cv2.setNumThreads(1)
    decoder: Decoder | None = None
    if backend is None:
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
        chosen.backend.warm_up(warm_up_shapes(chosen.backend.info.long_side))
        backend, decoder = chosen.backend, chosen.decoder
    if settings.decode_isolation:
        if decoder is None:
            decode = partial(decode_image, long_side=backend.info.long_side, limits=settings.limits)
            decoder = ProcessDecoder(decode, settings.prepare_timeout_s)
        else:
            log.warning("decode_isolation applies to CPU decoding only; nvJPEG runs in-process")
    return Cropper(
        backend,
        aspects=settings.aspects,
        limits=settings.limits,
        max_batch=settings.max_batch,
        decoder=decoder,
    )


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
        service.close()
    return 0
