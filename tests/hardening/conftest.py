"""The streaming fixtures (embedded broker, topics, readers, in-process workers) for the
end-to-end hardening test. Imported, not copied: they are defined in tests/stream/conftest.py."""

from __future__ import annotations

from tests.stream.conftest import broker, reader_factory, start_worker, topics

__all__ = ["broker", "reader_factory", "start_worker", "topics"]
