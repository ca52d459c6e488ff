"""The TLS settings reach librdkafka: a handshake against a loopback TLS server whose
certificate a private CA signed, as a broker behind a mounted Kubernetes Secret would be."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from cropworker.stream.settings import Settings


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        message = "openssl is not installed (Debian package openssl)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must have it")
        pytest.skip(message)
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "1", "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", *extra, cwd=d)  # fmt: skip
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


@dataclass
class TlsServer:
    """Accepts connections and records each TLS handshake: the client's certificate subject,
    or the error."""

    context: ssl.SSLContext
    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    outcomes: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert() or {}
                    subject = dict(pair[0] for pair in peer.get("subject", ()))
                    self.outcomes.append(f"ok {subject.get('commonName', '-')}")
            except (ssl.SSLError, OSError) as exc:
                self.outcomes.append(f"error {exc}")


@pytest.fixture
def server(pki: Pki) -> Iterator[TlsServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate, when sent, must verify
    running = TlsServer(context)
    thread = threading.Thread(target=running.serve, daemon=True)
    thread.start()
    yield running
    running.done.set()
    thread.join(5)
    running.sock.close()


def handshake(server: TlsServer, **tls: str) -> str:
    """The server's view of the first handshake of a producer built from `Settings`."""
    settings = Settings(brokers=server.address, security_protocol="ssl", **tls)
    producer = Producer({**settings.producer_config(), "socket.connection.setup.timeout.ms": 3000})
    for _ in range(30):
        producer.poll(0.1)
        if server.outcomes:
            break
    del producer
    assert server.outcomes, "the client never connected"
    return server.outcomes[0]


def test_without_the_private_ca_the_broker_is_refused(server: TlsServer) -> None:
    outcome = handshake(server)
    assert outcome.startswith("error") and "unknown ca" in outcome.lower(), outcome


def test_the_ca_location_makes_the_broker_trusted(server: TlsServer, pki: Pki) -> None:
    assert handshake(server, ssl_ca_location=str(pki.ca)) == "ok -"


def test_the_client_certificate_is_presented_for_mutual_tls(server: TlsServer, pki: Pki) -> None:
    outcome = handshake(
        server,
        ssl_ca_location=str(pki.ca),
        ssl_certificate_location=str(pki.client_cert),
        ssl_key_location=str(pki.client_key),
    )
    assert outcome == "ok client"


@pytest.mark.parametrize("client", ["admin", "reader"])
def test_the_demos_own_clients_present_the_client_certificate(
    server: TlsServer, pki: Pki, client: str
) -> None:
    """`cropworker demo --brokers` on a TLS broker: besides the worker's clients (and its
    uploader, a producer as above) it makes an admin client to create the topics and a reader
    of the results; both must come with the CA and the client certificate."""
    settings = Settings(
        brokers=server.address,
        security_protocol="ssl",
        ssl_ca_location=str(pki.ca),
        ssl_certificate_location=str(pki.client_cert),
        ssl_key_location=str(pki.client_key),
    )
    quick = {"socket.connection.setup.timeout.ms": 3000}
    made: AdminClient | Consumer
    if client == "admin":
        made = AdminClient({**settings.admin_config(), **quick})
    else:
        made = Consumer({**settings.reader_config("reader"), **quick})
    for _ in range(30):
        made.poll(0.1)
        if server.outcomes:
            break
    del made
    assert server.outcomes[:1] == ["ok client"]
