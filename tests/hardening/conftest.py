"""The streaming fixtures (topics, readers, in-process workers) for the end-to-end hardening
test. Imported, not copied: they are defined in tests/stream/conftest.py; the broker they run
on is the session's one (tests/conftest.py)."""

from __future__ import annotations

from tests.stream.conftest import reader_factory, start_worker, topics

__all__ = ["reader_factory", "start_worker", "topics"]
