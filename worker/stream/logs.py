"""Structured logs: one JSON object per line (or plain text), with per-record fields.

Library code logs with `extra=fields(media_id=..., partition=...)`; the formatter puts those
fields at the top level of the JSON object, next to time, level, logger and message, so a log
pipeline can filter on them without parsing messages.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_FIELDS = "cropworker_fields"


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` argument for a log call carrying structured fields."""
    return {_FIELDS: values}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = getattr(record, _FIELDS, {})
        return text + "".join(f" {key}={value}" for key, value in extra.items())


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """Send the root logger's records to stderr in `fmt` ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
