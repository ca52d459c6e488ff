"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def backend():  # type: ignore[no-untyped-def]
    from cropworker.backend import OnnxBackend

    return OnnxBackend("vanilla", threads=1)


@pytest.fixture(scope="session")
def broker():  # type: ignore[no-untyped-def]
    """One real embedded Kafka-protocol broker for the whole run (stream and hardening tests)."""
    from cropworker.demo.broker import EmbeddedBroker

    with EmbeddedBroker() as running:
        yield running
