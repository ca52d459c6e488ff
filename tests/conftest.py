"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def backend():  # type: ignore[no-untyped-def]
    from cropworker.backend import OnnxBackend

    return OnnxBackend("vanilla", threads=1)
