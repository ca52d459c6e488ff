"""The composition root: what `app.build` assembles from settings and what it takes as given."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np

from cropworker.backend import OnnxBackend
from cropworker.pipeline import Cropper
from cropworker.stream import app
from cropworker.stream.settings import Settings

LOCAL = Settings(metrics_host="127.0.0.1", metrics_port=0)


class Counting:
    """A backend that counts its calls (a given backend is used as is: never warmed up)."""

    def __init__(self, inner: OnnxBackend) -> None:
        self.inner, self.info, self.calls = inner, inner.info, 0

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.infer(images)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_a_given_backend_is_the_workers_network(backend: OnnxBackend) -> None:
    counting = Counting(backend)
    service = app.build(LOCAL, backend=counting)
    try:
        assert service.worker.cropper.backend is counting
        assert counting.calls == 0  # the caller's backend, the caller's warm-up
        assert service.worker.cropper.aspects.keys() == set(LOCAL.aspects)
        info = service.registry.get_sample_value(
            "cropworker_model_info", {"model": backend.info.tag}
        )
        assert info == 1
    finally:
        service.close()


def test_from_settings_the_chosen_network_is_warmed_up() -> None:
    service = app.build(
        Settings(model="fast", backend="cpu", metrics_host="127.0.0.1", metrics_port=0)
    )
    try:
        assert service.worker.cropper.backend.info.name == "fast"
        assert service.health.live and not service.health.ready  # built, not running
    finally:
        service.close()


def test_a_given_cropper_and_injected_parts_reach_the_worker(backend: OnnxBackend) -> None:
    cropper = Cropper(backend, aspects=("2:1",))
    made: list[dict[str, Any]] = []

    def consumer(config: dict[str, Any]) -> Any:
        made.append(config)
        raise RuntimeError("not needed")

    service = app.build(LOCAL, cropper=cropper, consumer_factory=consumer)
    try:
        assert service.worker.cropper is cropper
        assert service.worker.consumer_factory is consumer
    finally:
        service.close()


def test_the_metrics_port_is_bound_at_start_and_freed_at_close(backend: OnnxBackend) -> None:
    service = app.build(LOCAL, backend=backend)
    service.close()  # built, never served: nothing to release, returns at once
    service = app.build(LOCAL, backend=backend)
    port = service.server.start().port
    assert port != 0 and not port_is_free(port)
    service.close()
    assert port_is_free(port)
