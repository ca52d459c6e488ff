from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

import pytest

from cropworker.errors import FetchError, FetchForbiddenError, ImageTooLargeError
from cropworker.stream.events import ImageUrl, InlineImage
from cropworker.stream.fetch import Fetcher, FetchPolicy, host_allowed, is_public


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"jpeg bytes")
    (tmp_path / "images" / "big.jpg").write_bytes(bytes(2000))
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", tmp_path / "images" / "link.jpg")
    return tmp_path / "images"


def file_fetcher(root: Path) -> Fetcher:
    return Fetcher(FetchPolicy(file_root=root.resolve(), max_bytes=1000))


def test_inline_bytes_need_no_fetch() -> None:
    assert Fetcher(FetchPolicy()).fetch(InlineImage(b"abc")) == (b"abc", 1)


def test_files_under_the_root_are_read(root: Path) -> None:
    assert file_fetcher(root).fetch(ImageUrl((root / "a.jpg").as_uri())) == (b"jpeg bytes", 1)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file://{root}/../secret.txt",
        "file://{root}/%2e%2e/secret.txt",
        "file://{root}/link.jpg",  # a symlink pointing outside
        "file://otherhost{root}/a.jpg",
        "ftp://example.com/a.jpg",
        "s3://bucket/a.jpg",
    ],
)
def test_escapes_and_other_schemes_are_forbidden(root: Path, url: str) -> None:
    with pytest.raises(FetchForbiddenError):
        file_fetcher(root).fetch(ImageUrl(url.format(root=root)))


def test_file_urls_are_off_without_a_root(root: Path) -> None:
    with pytest.raises(FetchForbiddenError, match="disabled"):
        Fetcher(FetchPolicy()).fetch(ImageUrl((root / "a.jpg").as_uri()))


def test_missing_and_oversized_files(root: Path) -> None:
    with pytest.raises(FetchError) as missing:
        file_fetcher(root).fetch(ImageUrl((root / "nope.jpg").as_uri()))
    assert not missing.value.retryable and missing.value.attempts == 1
    with pytest.raises(ImageTooLargeError):
        file_fetcher(root).fetch(ImageUrl((root / "big.jpg").as_uri()))


def test_host_allow_list() -> None:
    allowed = ("img.example.com", "*.cdn.example.com")
    assert host_allowed("img.example.com", allowed)
    assert host_allowed("a.b.cdn.example.com", allowed)
    assert not host_allowed("cdn.example.com", allowed)
    assert not host_allowed("evilcdn.example.com", allowed)
    assert not host_allowed("img.example.com.evil.net", allowed)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(address)


def test_public_address() -> None:
    assert is_public("93.184.215.14") and is_public("2606:2800:21f:cb07:6820:80da:af6b:8b2c")


class FakeTransport:
    def __init__(self, *outcomes: bytes | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, str]] = []

    def get(self, url: SplitResult, address: str, policy: FetchPolicy) -> bytes:
        self.calls.append((url.geturl(), address))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def http_fetcher(transport: FakeTransport, sleeps: list[float], resolves_to: str) -> Fetcher:
    policy = FetchPolicy(allowed_hosts=("img.example.com",), attempts=3, backoff_s=0.1)
    return Fetcher(
        policy, transport, resolver=lambda host, port: [resolves_to], sleep=sleeps.append
    )


def test_transient_failures_are_retried_with_backoff() -> None:
    transport = FakeTransport(
        FetchError("503", retryable=True), FetchError("timeout", retryable=True), b"img"
    )
    sleeps: list[float] = []
    fetcher = http_fetcher(transport, sleeps, "93.184.215.14")
    assert fetcher.fetch(ImageUrl("https://img.example.com/a.jpg")) == (b"img", 3)
    assert sleeps == [0.1, 0.2]
    assert transport.calls[0] == ("https://img.example.com/a.jpg", "93.184.215.14")


def test_retries_give_up_and_permanent_errors_fail_at_once() -> None:
    sleeps: list[float] = []
    transport = FakeTransport(*[FetchError("503", retryable=True)] * 3)
    with pytest.raises(FetchError) as exhausted:
        http_fetcher(transport, sleeps, "93.184.215.14").fetch(ImageUrl("http://img.example.com/"))
    assert exhausted.value.attempts == 3 and len(sleeps) == 2
    transport = FakeTransport(FetchError("404"))
    with pytest.raises(FetchError) as permanent:
        http_fetcher(transport, sleeps, "93.184.215.14").fetch(ImageUrl("http://img.example.com/"))
    assert permanent.value.attempts == 1


def test_hosts_resolving_to_private_addresses_are_refused_before_connecting() -> None:
    transport = FakeTransport(b"never")
    fetcher = http_fetcher(transport, [], "10.0.0.5")
    with pytest.raises(FetchForbiddenError, match="non-public"):
        fetcher.fetch(ImageUrl("http://img.example.com/a.jpg"))
    with pytest.raises(FetchForbiddenError, match="allow-list"):
        fetcher.fetch(ImageUrl("http://other.example.com/a.jpg"))
    assert transport.calls == []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = {"/ok": b"x" * 100, "/big": b"x" * 5000}.get(self.path)
        if body is None:
            self.send_response(404 if self.path == "/missing" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def real_http(allow_private: bool) -> Fetcher:
    policy = FetchPolicy(
        allowed_hosts=("127.0.0.1",),
        allow_private=allow_private,
        max_bytes=1000,
        attempts=2,
        backoff_s=0.0,
    )
    return Fetcher(policy)


def test_the_standard_library_transport(server: str) -> None:
    with pytest.raises(FetchForbiddenError, match="non-public"):
        real_http(allow_private=False).fetch(ImageUrl(f"{server}/ok"))
    fetcher = real_http(allow_private=True)
    assert fetcher.fetch(ImageUrl(f"{server}/ok")) == (b"x" * 100, 1)
    with pytest.raises(ImageTooLargeError):
        fetcher.fetch(ImageUrl(f"{server}/big"))
    with pytest.raises(FetchError) as missing:
        fetcher.fetch(ImageUrl(f"{server}/missing"))
    assert missing.value.attempts == 1 and "404" in str(missing.value)
    with pytest.raises(FetchError) as unavailable:
        fetcher.fetch(ImageUrl(f"{server}/flaky"))
    assert unavailable.value.attempts == 2 and unavailable.value.retryable
