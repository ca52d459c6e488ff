"""Every Kafka client the product makes gets its librdkafka config from `Settings`, so TLS and
SASL reach them all: the worker's consumer and producer, the admin client that creates topics,
and the demo's reader and uploader (an external broker behind SASL_SSL must work for the demo)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import admin as kafka_admin

from cropworker.demo import run as demo
from cropworker.demo.broker import create_topics
from cropworker.stream.settings import Secret, Settings
from tests.images import SAMPLES

SECURE = Settings(
    brokers="kafka.example.com:9093",
    security_protocol="sasl_ssl",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="cropworker",
    sasl_password=Secret("hunter2"),
    ssl_ca_location="/etc/kafka/ca.crt",
    ssl_certificate_location="/etc/kafka/client.crt",
    ssl_key_location="/etc/kafka/client.key",
    embedded_broker=False,
)
SECURITY = {
    "bootstrap.servers": "kafka.example.com:9093",
    "security.protocol": "sasl_ssl",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "cropworker",
    "sasl.password": "hunter2",
    "ssl.ca.location": "/etc/kafka/ca.crt",
    "ssl.certificate.location": "/etc/kafka/client.crt",
    "ssl.key.location": "/etc/kafka/client.key",
}


def missing_security(config: dict[str, Any]) -> dict[str, Any]:
    """The security settings `config` lacks or gets wrong (empty when it has them all)."""
    return {key: value for key, value in SECURITY.items() if config.get(key) != value}


@pytest.mark.parametrize(
    "render",
    [
        Settings.consumer_config,
        Settings.producer_config,
        Settings.admin_config,
        lambda settings: settings.reader_config("reader"),
    ],
    ids=["consumer", "producer", "admin", "reader"],
)
def test_every_rendered_config_carries_the_security_settings(
    render: Callable[[Settings], dict[str, Any]],
) -> None:
    assert missing_security(render(SECURE)) == {}


class Stop(Exception):
    """Raised by the fake reader to end the demo once every client has been made."""


@dataclass
class Clients:
    """The configs handed to the Kafka client constructors, in order, as (kind, config)."""

    made: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Clients:
    """Fake admin client, reader and uploader that record their configs; the reader's first
    poll stops the demo."""
    seen = Clients()

    class Admin:
        def __init__(self, config: dict[str, Any]) -> None:
            seen.made.append(("admin", config))

        def create_topics(self, topics: list[Any], **_: Any) -> dict[str, Future[None]]:
            done: dict[str, Future[None]] = {}
            for topic in topics:
                done[topic.topic] = Future()
                done[topic.topic].set_result(None)
            return done

    class Reader:
        def __init__(self, config: dict[str, Any]) -> None:
            seen.made.append(("reader", config))

        def assign(self, partitions: list[Any]) -> None:
            pass

        def poll(self, timeout: float) -> None:
            raise Stop

        def close(self) -> None:
            pass

    class Uploader:
        def __init__(self, config: dict[str, Any]) -> None:
            seen.made.append(("uploader", config))

        def produce(self, topic: str, value: bytes, key: bytes) -> None:
            pass

        def flush(self, timeout: float) -> int:
            return 0  # nothing left undelivered

    monkeypatch.setattr(kafka_admin, "AdminClient", Admin)
    monkeypatch.setattr(demo, "Consumer", Reader)
    monkeypatch.setattr(demo, "Producer", Uploader)
    return seen


@dataclass
class FakeWorker:
    settings: Settings

    def run(self) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class FakeServer:
    url: str = "http://127.0.0.1:0"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class FakeService:
    worker: FakeWorker
    server: FakeServer

    def close(self) -> None:
        self.server.stop()


def test_the_demos_clients_get_the_security_settings(
    clients: Clients, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker itself is faked out (its consumer and producer configs are the ones tested
    above); what is checked is every client `run_demo` makes on its own."""
    shutil.copy(SAMPLES / "chelsea.jpg", tmp_path / "chelsea.jpg")
    settings = replace(SECURE, samples=tmp_path, report_dir=tmp_path / "report")

    def build(settings: Settings, **_: Any) -> FakeService:
        return FakeService(FakeWorker(settings), FakeServer())

    monkeypatch.setattr(demo, "build", build)
    with pytest.raises(Stop):
        demo.run_demo(settings, out=io.StringIO())
    assert [kind for kind, _ in clients.made] == ["admin", "reader", "uploader"]
    for kind, config in clients.made:
        assert missing_security(config) == {}, kind


def test_create_topics_takes_a_whole_config_or_a_bootstrap_address(clients: Clients) -> None:
    create_topics(SECURE.admin_config(), {"uploads": 4})
    create_topics("127.0.0.1:9092", {"uploads": 4})
    (_, full), (_, plain) = clients.made
    assert missing_security(full) == {}
    assert plain == {"bootstrap.servers": "127.0.0.1:9092"}
