"""The worker's one settings object, its command-line flags and `CROPWORKER_*` variables.

Every field of `Settings` is a flag (`--input-topic`) and an environment variable
(`CROPWORKER_INPUT_TOPIC`); the flag wins over the variable, the variable over the default. This
module is the only place that reads the worker's `CROPWORKER_*` variables (through `..env`,
which names the variable in the error for a bad value). It also renders every librdkafka
configuration dictionary the product uses (the worker's consumer and producer, the admin client,
the demo's reader), so Kafka settings, TLS and SASL included, live in one reviewed place. Secrets
are `Secret`s: their repr is masked, so neither logs nor `describe()` show them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import crop
from ..backend import DEFAULT_MODEL
from ..decode import DecodeLimits
from ..env import ENV_PREFIX, argument_type, parse, parse_aspects
from ..errors import SettingsError
from ..gpu.select import BACKEND_CHOICES
from ..gpu.torch_backend import DEFAULT_PRECISION, PRECISIONS

_DEFAULT_LIMITS = DecodeLimits()
# Against the embedded broker the first group join takes about half the session timeout
# (docs/notes.md#embedded-broker); 6 s keeps that at 3 s. Production Kafka keeps the client default.
EMBEDDED_SESSION_TIMEOUT_MS = 6_000
ASSIGNORS = ("cooperative-sticky", "range", "roundrobin")
OFFSET_RESETS = ("earliest", "latest")


@dataclass(frozen=True)
class Secret:
    """A value that must never be logged: `str()` and `repr()` are masked."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "********" if self.value else ""

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"expected true or false, got {text!r}")


def _list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def _meta(help: str, parse: Callable[[str], Any] = str, flag: str = "") -> dict[str, Any]:
    """A field's flag metadata: help text, parser of its text form, flag name override."""
    return {"help": help, "parse": parse, "flag": flag}


@dataclass(frozen=True)
class Settings:
    """Everything `cropworker run` and `cropworker demo` can be told. Immutable."""

    # Kafka
    brokers: str = field(
        default="localhost:9092", metadata=_meta("bootstrap servers, host:port[,host:port]")
    )
    group_id: str = field(default="cropworker", metadata=_meta("consumer group id"))
    input_topic: str = field(default="uploads", metadata=_meta("topic of upload events"))
    output_topic: str = field(
        default="crops", metadata=_meta("topic of crop results, keyed by media id")
    )
    dead_letter_topic: str = field(
        default="uploads.dead-letter", metadata=_meta("topic for rejected events")
    )
    client_id: str = field(
        default="",
        metadata=_meta(
            "Kafka client.id, how brokers (quotas, logs) tell workers apart"
            " (empty: cropworker-HOSTNAME-PID; the chart passes the pod name)"
        ),
    )
    # Cooperative rebalancing moves only the partitions that change owner; the eager assignors
    # (range, roundrobin) stop the whole group at every scale step. A running group switches
    # with two rolling restarts (deploy/README.md): members must share one protocol.
    assignor: str = field(
        default="cooperative-sticky",
        metadata=_meta("partition assignor: cooperative-sticky, range or roundrobin"),
    )
    # earliest: a group without a committed offset (new, or expired) starts at the oldest
    # retained upload, so none produced before the first commit is skipped; it may replay the
    # retention. latest skips what was produced before. KEDA's offsetResetPolicy follows it.
    offset_reset: str = field(
        default="earliest",
        metadata=_meta("where a partition without a committed offset starts: earliest or latest"),
    )
    session_timeout_ms: int = field(
        default=45_000, metadata=_meta("consumer group session timeout", int)
    )
    # librdkafka's default. One loop iteration (consume, then a whole inference batch) must
    # stay under it, or the consumer leaves the group and its partitions are lost (their work
    # is then redone by whoever gets them: duplicates, never a loss).
    max_poll_interval_ms: int = field(
        default=300_000,
        metadata=_meta(
            "longest gap between consumer polls before the group drops this worker (ms)", int
        ),
    )
    commit_interval_ms: int = field(
        default=0,
        metadata=_meta(
            "commit stored offsets at most this often (0: after every acknowledged batch)", int
        ),
    )
    delivery_timeout_ms: int = field(
        default=30_000,
        metadata=_meta("time a result may take to be acknowledged before it is re-sent", int),
    )
    statistics_interval_ms: int = field(
        default=5_000, metadata=_meta("librdkafka statistics (consumer lag) period", int)
    )
    fetch_queue_kbytes: int = field(
        default=16_384, metadata=_meta("prefetched-message buffer of the consumer", int)
    )
    # librdkafka's default (500 ms) is the latency floor against a broker that holds a fetch
    # until its deadline even when data is there (the embedded tansu does); Kafka answers early.
    fetch_wait_max_ms: int = field(
        default=50, metadata=_meta("longest the broker may hold a fetch request (ms)", int)
    )
    max_message_bytes: int = field(
        default=16 * 1024 * 1024, metadata=_meta("largest Kafka message read or written", int)
    )
    security_protocol: str = field(
        default="plaintext", metadata=_meta("plaintext, ssl, sasl_plaintext or sasl_ssl")
    )
    sasl_mechanism: str = field(
        default="", metadata=_meta("PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (with sasl_*)")
    )
    sasl_username: str = field(default="", metadata=_meta("SASL user name"))
    sasl_password: Secret = field(
        default=Secret(""), metadata=_meta("SASL password (never logged)", Secret)
    )
    ssl_ca_location: str = field(
        default="", metadata=_meta("CA bundle (PEM file) that signs the brokers' certificates")
    )
    ssl_certificate_location: str = field(
        default="", metadata=_meta("client certificate (PEM file) for mutual TLS")
    )
    ssl_key_location: str = field(
        default="", metadata=_meta("client private key (PEM file) for mutual TLS")
    )
    # Model and crops
    model: str = field(
        default=DEFAULT_MODEL,
        metadata=_meta("fast, default or large (by cost), vanilla, or an .onnx path"),
    )
    threads: int = field(default=1, metadata=_meta("ONNX Runtime intra-op threads", int))
    backend: str = field(
        default="auto",
        metadata=_meta(
            "inference backend: cpu (ONNX Runtime), tensorrt (needs --engine), cuda (PyTorch on"
            " the GPU), or auto (tensorrt when --engine is set, else cuda when PyTorch finds a"
            " GPU, else cpu)"
        ),
    )
    engine: Path | None = field(
        default=None,
        metadata=_meta(
            "TensorRT engine from `cropworker build-engine` (its .json beside it)", _optional_path
        ),
    )
    # fp16 is faster but its log-densities differ from the CPU's by up to ~0.05 (fp32: 1e-5);
    # measured in tests/gpu/test_onnx_torch.py.
    cuda_precision: str = field(
        default=DEFAULT_PRECISION,
        metadata=_meta("precision of the cuda backend: fp32 (matches the CPU) or fp16 (faster)"),
    )
    require_gpu: bool = field(
        default=False,
        metadata=_meta("fail instead of falling back to the CPU when no GPU is usable", _bool),
    )
    gpu_decode: bool = field(
        default=False, metadata=_meta("decode JPEGs on the GPU (nvJPEG via nvimgcodec)", _bool)
    )
    aspects: tuple[str, ...] = field(
        default=crop.DEFAULT_ASPECTS,
        metadata=_meta("default aspect ratios W:H, comma-separated", parse_aspects, "--aspect"),
    )
    max_image_bytes: int = field(
        default=_DEFAULT_LIMITS.max_bytes, metadata=_meta("largest encoded image", int)
    )
    max_pixels: int = field(
        default=_DEFAULT_LIMITS.max_pixels, metadata=_meta("largest declared image area", int)
    )
    max_full_pixels: int = field(
        default=_DEFAULT_LIMITS.max_full_pixels,
        metadata=_meta("largest declared area of a non-JPEG image (decoded at full size)", int),
    )
    # Pipeline
    decode_threads: int = field(
        default=2, metadata=_meta("threads fetching and decoding images", int)
    )
    decode_isolation: bool = field(
        default=False,
        metadata=_meta(
            "decode in a child process per decode thread: a crashing decoder fails its upload"
            " (decoder_crashed), not the worker; CPU decoding only",
            _bool,
        ),
    )
    max_batch: int = field(default=8, metadata=_meta("largest inference batch", int))
    max_wait_ms: float = field(
        default=10.0, metadata=_meta("longest an image waits for its batch to fill", float)
    )
    # Little's law: throughput = images in flight / time each spends in the worker (decode,
    # batch, network, produce, broker acknowledgement). 64 capped one worker at ~70 uploads/s
    # against the embedded broker; 256 let it reach ~250/s (benchmarks/README.md).
    max_in_flight: int = field(
        default=256, metadata=_meta("images in the worker before partitions are paused", int)
    )
    # What in-flight jobs hold: the encoded message until decoded, then the network input.
    # 256 MiB keeps the worst case of docs/limits.md, decoding aside, in the chart's 1 GiB limit.
    max_in_flight_bytes: int = field(
        default=256 * 1024 * 1024,
        metadata=_meta("bytes held by in-flight images before partitions are paused", int),
    )
    shutdown_timeout_s: float = field(
        default=20.0, metadata=_meta("bound on draining at SIGTERM or revocation", float)
    )
    # A watchdog, not a limit a valid upload meets: the fetch's own worst case with the defaults
    # is 3 x (3 + 10) s plus backoff, and decoding at the pixel and scan limits takes seconds.
    prepare_timeout_s: float = field(
        default=60.0,
        metadata=_meta(
            "longest one event may take to fetch and decode; then it is dead-lettered as timeout",
            float,
        ),
    )
    # Above shutdown_timeout_s: draining at revocation or SIGTERM is the longest legitimate gap.
    loop_timeout_s: float = field(
        default=60.0,
        metadata=_meta(
            "/healthz fails when the consume/infer loop has not turned for this long", float
        ),
    )
    # Fetching references
    file_root: Path | None = field(
        default=None, metadata=_meta("directory file:// references may read", _optional_path)
    )
    http_allowed_hosts: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "hosts http(s):// references may use, comma-separated; *.example.com allowed", _list
        ),
    )
    http_allow_private: bool = field(
        default=False,
        metadata=_meta(
            "allow http(s) hosts that resolve to loopback/private/link-local addresses", _bool
        ),
    )
    fetch_connect_timeout_s: float = field(
        default=3.0, metadata=_meta("http(s) connect timeout", float)
    )
    fetch_read_timeout_s: float = field(
        default=10.0, metadata=_meta("http(s) read timeout (whole body)", float)
    )
    fetch_attempts: int = field(
        default=3, metadata=_meta("tries for a transient fetch failure", int)
    )
    fetch_backoff_s: float = field(
        default=0.2, metadata=_meta("first retry delay, doubled each time", float)
    )
    # Observability
    metrics_host: str = field(
        default="0.0.0.0", metadata=_meta("address of /metrics, /healthz, /readyz")
    )
    metrics_port: int = field(
        default=9464, metadata=_meta("port of /metrics, /healthz, /readyz (0: any free port)", int)
    )
    log_format: str = field(default="json", metadata=_meta("json (one object per line) or text"))
    log_level: str = field(default="INFO", metadata=_meta("DEBUG, INFO, WARNING or ERROR"))
    # Demo
    embedded_broker: bool = field(
        default=True, metadata=_meta("demo: start an embedded broker (else use --brokers)", _bool)
    )
    samples: Path = field(
        default=Path("samples"), metadata=_meta("demo: folder of images to upload", Path)
    )
    report_dir: Path = field(
        default=Path("out/report"), metadata=_meta("demo: report folder", Path, "--out")
    )
    follow: bool = field(
        default=False, metadata=_meta("demo: keep running after the samples until Ctrl-C", _bool)
    )

    def __post_init__(self) -> None:
        positive = ("threads", "decode_threads", "max_batch", "max_in_flight", "fetch_attempts")
        for name in (*positive, "max_in_flight_bytes", "max_message_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.max_wait_ms >= 0:
            raise SettingsError(f"max_wait_ms must be at least 0, got {self.max_wait_ms}")
        if not self.prepare_timeout_s > 0:
            raise SettingsError(f"prepare_timeout_s must be positive, got {self.prepare_timeout_s}")
        if self.max_in_flight < self.max_batch:
            raise SettingsError("max_in_flight must be at least max_batch")
        if self.max_poll_interval_ms < self.session_timeout_ms:
            # librdkafka refuses to create the consumer otherwise
            raise SettingsError("max_poll_interval_ms must be at least session_timeout_ms")
        if self.backend not in BACKEND_CHOICES:
            raise SettingsError(f"backend must be one of {BACKEND_CHOICES}, got {self.backend!r}")
        if self.cuda_precision not in PRECISIONS:
            raise SettingsError(
                f"cuda_precision must be one of {PRECISIONS}, got {self.cuda_precision!r}"
            )
        if self.backend == "tensorrt" and self.engine is None:
            raise SettingsError("backend tensorrt needs an engine (--engine, CROPWORKER_ENGINE)")
        if not self.loop_timeout_s > self.shutdown_timeout_s:
            raise SettingsError(
                f"loop_timeout_s ({self.loop_timeout_s:g}) must exceed shutdown_timeout_s"
                f" ({self.shutdown_timeout_s:g}): a drain must not look like a hung loop"
            )
        if self.assignor not in ASSIGNORS:
            raise SettingsError(f"assignor must be one of {ASSIGNORS}, got {self.assignor!r}")
        if self.offset_reset not in OFFSET_RESETS:
            raise SettingsError(
                f"offset_reset must be one of {OFFSET_RESETS}, got {self.offset_reset!r}"
            )
        if self.log_format not in {"json", "text"}:
            raise SettingsError(f"log_format must be json or text, got {self.log_format!r}")

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_image_bytes, self.max_pixels, self.max_full_pixels)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> Settings:
        """`defaults` (else the field defaults), overridden by `CROPWORKER_*` variables."""
        source = os.environ if environ is None else environ
        values = dict(defaults)
        for f in dataclasses.fields(cls):
            if (key := ENV_PREFIX + f.name.upper()) in source:
                values[f.name] = parse(f.name.upper(), source[key], f.metadata["parse"])
        return cls(**values)

    def describe(self) -> dict[str, str]:
        """Every setting as text, secrets masked: safe to log."""
        return {f.name: _show(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def kafka_client_id(self) -> str:
        """`client_id`, else one per host and process: in a container the worker is PID 1, so
        the host name (the pod name) is what tells pods apart."""
        return self.client_id or f"cropworker-{socket.gethostname()}-{os.getpid()}"

    def _common_kafka(self) -> dict[str, Any]:
        """What every client needs to reach the brokers: every config below starts here."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "client.id": self.kafka_client_id,
            "security.protocol": self.security_protocol,
            "message.max.bytes": self.max_message_bytes,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password.value
        # Paths, so the files can come from a mounted Kubernetes Secret. librdkafka's bundled
        # OpenSSL ignores SSL_CERT_FILE: a private CA must be named here.
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            if value := getattr(self, name):
                conf[name.replace("_", ".")] = value
        return conf

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka consumer settings: offsets are stored by the worker after the result is
        acknowledged, never on consumption, and committed by the worker."""
        return {
            **self._common_kafka(),
            **self._fetch_limits(),
            "group.id": self.group_id,
            "partition.assignment.strategy": self.assignor,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.offset_reset,
            "session.timeout.ms": self.session_timeout_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            # the Kafka guidance: heartbeat at most a third of the session timeout
            "heartbeat.interval.ms": min(3_000, self.session_timeout_ms // 3),
            "statistics.interval.ms": self.statistics_interval_ms,
            "queued.max.messages.kbytes": self.fetch_queue_kbytes,
        }

    def reader_config(self, group_id: str) -> dict[str, Any]:
        """librdkafka settings of a consumer that reads assigned partitions without joining a
        group or committing (the demo's reader of results and dead letters). librdkafka wants
        a `group_id` even so; a fresh one keeps it from resuming anyone's offsets."""
        return {
            **self._common_kafka(),
            **self._fetch_limits(),
            "group.id": group_id,
            "enable.auto.commit": False,
        }

    def _fetch_limits(self) -> dict[str, Any]:
        """A consumer's fetch sizes: any message the producers may write can be read."""
        return {
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
            "fetch.max.bytes": self.max_message_bytes,
            "max.partition.fetch.bytes": self.max_message_bytes,
            # a fetch response may carry a whole fetch.max.bytes plus protocol framing
            "receive.message.max.bytes": self.max_message_bytes + 1024 * 1024,
        }

    def producer_config(self) -> dict[str, Any]:
        """librdkafka producer settings: idempotent, acknowledged by all in-sync replicas. The
        demo's uploader uses them too."""
        return {
            **self._common_kafka(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "delivery.timeout.ms": self.delivery_timeout_ms,
            "compression.type": "lz4",
        }

    def admin_config(self) -> dict[str, Any]:
        """librdkafka settings of the admin client that creates topics (`broker.create_topics`)."""
        return self._common_kafka()


# `cropworker demo`'s defaults where they differ from a production worker; flags and CROPWORKER_*
# variables still override them.
DEMO_DEFAULTS: dict[str, Any] = {
    "session_timeout_ms": EMBEDDED_SESSION_TIMEOUT_MS,
    "statistics_interval_ms": 1_000,
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
    "log_format": "text",
    "log_level": "WARNING",
    "group_id": "cropworker-demo",
}


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return "" if value is None else str(value)


def flag_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, defaults: Settings, demo: bool = False) -> None:
    """One flag per setting, its default taken from `defaults` (the environment). The demo's
    own settings (help starting "demo:") only when `demo`."""
    for f in dataclasses.fields(Settings):
        if f.metadata["help"].startswith("demo:") and not demo:
            continue
        parse = f.metadata["parse"]
        shown = _show(getattr(defaults, f.name))
        help_text = f"{f.metadata['help']} (env {ENV_PREFIX}{f.name.upper()}; default {shown!r})"
        common: dict[str, Any] = {
            "dest": f.name,
            "default": getattr(defaults, f.name),
            "help": help_text.replace("%", "%%"),
        }
        if parse is _bool:
            parser.add_argument(flag_name(f), action=argparse.BooleanOptionalAction, **common)
        else:
            parser.add_argument(
                flag_name(f), type=argument_type(f.name, parse), metavar=f.name.upper(), **common
            )


def from_namespace(args: argparse.Namespace) -> Settings:
    """The `Settings` parsed by a parser that `add_arguments` set up (settings without a flag
    keep their defaults)."""
    fields = dataclasses.fields(Settings)
    return Settings(**{f.name: getattr(args, f.name) for f in fields if hasattr(args, f.name)})
