"""The streaming worker: Kafka upload events in, crop metadata out, at-least-once.

settings   the one settings object (flags, CROPWORKER_* variables, librdkafka configs)
events     upload event / crop result / dead-letter formats (JSON Schemas in ../schemas)
fetch      image bytes from inline data, file:// or http(s):// under a policy
isolation  decoding in child processes: a crashing decoder takes down only its child
jobs       one message's typed states (received, prepared, cropped, rejected); prepare()
pool       the fetch-and-decode threads; a stuck one is given up on and replaced
batcher    the pure micro-batcher (flush when full or when the oldest waited max_wait)
inflight   pure admission and backpressure: room for the next consume(), pause and resume
schedule   pure loop timing: the poll wait, the watchdog's looks, the commit interval
offsets    in-order contiguous acknowledgement: which offsets may be committed
publish    producing with delivery tracking; replaces a fatally failed producer
worker     the consumer loop, delegating its decisions to the pure parts above
metrics    Prometheus metrics, /metrics, /healthz, /readyz
logs       structured (JSON) logs
app        the composition root: build(settings, ...) assembles a worker and its metrics
           server (used by `cropworker run`, the demo, the tests and the benchmarks)

The demo and its embedded broker are a package of their own, ../demo.
"""

from .settings import Settings
from .worker import Worker

__all__ = ["Settings", "Worker"]
