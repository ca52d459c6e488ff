"""Hostile image references at the library level: SSRF through every address spelling, file://
escapes, redirects, and servers that stall or trickle. Real local sockets, short timeouts."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import SplitResult

import pytest

from cropworker.errors import FetchError, FetchForbiddenError
from cropworker.stream.events import ImageUrl
from cropworker.stream.fetch import Fetcher, FetchPolicy, Resolver, resolve
from tests.hardening.servers import Redirector, Server, http_response, stall, trickle

BODY = b"\xff\xd8 not really a jpeg" * 5


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(behaviour: Callable[..., None]) -> Server:
        started.append(Server(behaviour))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def counting(serve: Callable[..., Server]) -> Server:
    """A server that would answer with an image: any connection to it is a failed defence."""
    return serve(lambda conn, stopped: conn.sendall(http_response(BODY)))


class NoTransport:
    """The transport of a fetcher that must refuse before connecting anywhere."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def get(self, url: SplitResult, address: str, policy: FetchPolicy) -> bytes:
        self.calls.append((url.geturl(), address))
        raise AssertionError(f"connected to {address} for {url.geturl()}")


def fetcher(
    hosts: tuple[str, ...],
    resolver: Resolver = resolve,
    allow_private: bool = False,
    transport: NoTransport | None = None,
    **policy: float,
) -> Fetcher:
    settings = FetchPolicy(
        allowed_hosts=hosts,
        allow_private=allow_private,
        attempts=int(policy.pop("attempts", 1)),
        backoff_s=0.0,
        **policy,
    )
    return Fetcher(settings, transport, resolver=resolver)


# SSRF ----------------------------------------------------------------------------------------


def test_an_allowed_name_resolving_to_loopback_is_refused_before_connecting(
    counting: Server,
) -> None:
    """The real transport: the name is allowed, its address is not, and nothing connects."""
    resolved: list[str] = []

    def to_loopback(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    url = f"http://images.test:{counting.port}/a.jpg"
    with pytest.raises(FetchForbiddenError, match=r"non-public address 127\.0\.0\.1"):
        fetcher(("images.test",), to_loopback).fetch(ImageUrl(url))
    assert resolved == ["images.test"]
    assert counting.connections == 0
    # The control: with private addresses allowed the same fetch reaches the same server.
    assert fetcher(("images.test",), to_loopback, allow_private=True).fetch(ImageUrl(url)) == (
        BODY,
        1,
    )
    assert counting.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        ["127.0.0.1"],
        ["127.8.9.10"],
        ["::1"],
        ["::ffff:127.0.0.1"],  # IPv4-mapped IPv6
        ["::ffff:169.254.169.254"],
        ["2002:7f00:1::"],  # 6to4 around 127.0.0.1
        ["2002:a9fe:a9fe::"],  # 6to4 around the metadata service
        ["64:ff9b::a9fe:a9fe"],  # NAT64 around the metadata service
        ["10.0.0.5"],
        ["172.16.0.1"],
        ["192.168.1.1"],
        ["169.254.169.254"],  # cloud metadata
        ["100.100.100.200"],  # Alibaba Cloud metadata, in shared (CGNAT) space 100.64/10
        ["100.64.0.1"],
        ["0.0.0.0"],
        ["::"],
        ["fd00::1"],
        ["fe80::1%eth0"],
        ["224.0.0.1"],
        ["ff02::1"],
        ["93.184.215.14", "127.0.0.1"],  # one bad answer among good ones is enough
    ],
)
def test_names_resolving_to_non_public_addresses_are_refused(answer: list[str]) -> None:
    transport = NoTransport()
    refusing = fetcher(("images.test",), lambda host, port: answer, transport=transport)
    with pytest.raises(FetchForbiddenError, match="non-public"):
        refusing.fetch(ImageUrl("https://images.test/a.jpg"))
    assert transport.calls == []


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f000001",  # ... as one hex number
        "017700000001",  # ... as one octal number
        "0177.0.0.1",  # octal first part
        "0x7f.1",  # hex, two parts
        "127.1",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:7f00:1]",
    ],
)
def test_every_spelling_of_loopback_is_refused_by_the_real_resolver(
    host: str, counting: Server
) -> None:
    url = ImageUrl(f"http://{host}:{counting.port}/a.jpg")
    with pytest.raises(FetchForbiddenError, match="allow-list"):
        fetcher(()).fetch(url)
    allowed = host.strip("[]").lower()
    with pytest.raises(FetchForbiddenError, match="non-public"):
        fetcher((allowed,)).fetch(url)  # even when someone allow-lists the spelling
    assert counting.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://images.test@127.0.0.1/a.jpg",  # user info: the host is after the @
        "http://127.0.0.1#@images.test/a.jpg",  # fragment: the host is before the #
        "http://images.test.127.0.0.1.nip.io/a.jpg",
        "http://images.test./a.jpg",  # a trailing dot is another name
        "http://IMAGES.TEST:99999/a.jpg",  # a port out of range
        "http://images.test/\u00e4.jpg",  # not ASCII: http.client would raise its own error
        "http://images.test/a.jpg\r\nX-Injected: 1",  # header injection
        "gopher://images.test/a.jpg",
    ],
)
def test_url_tricks_are_refused(url: str) -> None:
    transport = NoTransport()
    public = fetcher(("images.test",), lambda host, port: ["93.184.215.14"], transport=transport)
    with pytest.raises(FetchForbiddenError):
        public.fetch(ImageUrl(url))
    assert transport.calls == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(status: int, counting: Server) -> None:
    """A real http.server answers with a redirect to another local server: the fetch fails
    with the redirect's status and the second server never hears from us."""
    redirector = Redirector(status, f"http://127.0.0.1:{counting.port}/a.jpg")
    try:
        url = ImageUrl(f"http://127.0.0.1:{redirector.port}/start.jpg")
        with pytest.raises(FetchError) as failed:
            fetcher(("127.0.0.1",), allow_private=True, attempts=3).fetch(url)
    finally:
        redirector.close()
    assert type(failed.value) is FetchError
    assert f"HTTP {status}" in str(failed.value)
    assert not failed.value.retryable and failed.value.attempts == 1
    assert redirector.seen == ["/start.jpg"]
    assert counting.connections == 0


# Slow servers --------------------------------------------------------------------------------


def timed_fetch(server: Server, **policy: float) -> tuple[FetchError, float]:
    local = fetcher(("127.0.0.1",), allow_private=True, connect_timeout_s=1.0, **policy)
    start = time.monotonic()
    with pytest.raises(FetchError) as failed:
        local.fetch(ImageUrl(f"http://127.0.0.1:{server.port}/a.jpg"))
    return failed.value, time.monotonic() - start


def test_a_server_that_accepts_and_sends_nothing_times_out(serve: Callable[..., Server]) -> None:
    error, took = timed_fetch(serve(stall), read_timeout_s=0.3)
    assert type(error) is FetchError and error.retryable
    assert 0.25 < took < 1.0


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_server_that_trickles_is_cut_off_at_the_read_timeout(
    part: str, serve: Callable[..., Server]
) -> None:
    """One byte every 0.2 s never trips a per-receive timeout; the response as a whole must
    arrive within read_timeout_s (trickled to the end, this one would take 20 s or more)."""
    response = http_response(BODY)
    at_once = 0 if part == "headers" else len(response) - len(BODY)
    error, took = timed_fetch(serve(trickle(response, at_once)), read_timeout_s=0.8)
    assert type(error) is FetchError and error.retryable
    assert 0.7 < took < 1.5


def test_a_trickling_server_is_tried_again_within_the_bound(serve: Callable[..., Server]) -> None:
    server = serve(trickle(http_response(BODY)))
    error, took = timed_fetch(server, read_timeout_s=0.4, attempts=2)
    assert error.attempts == 2 and server.connections == 2
    assert took < 1.5


# file:// -------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.jpg").write_bytes(BODY)
    (images / "sub" / "b.jpg").write_bytes(BODY)
    (tmp_path / "secret.txt").write_text("outside the root")
    (tmp_path / "images-evil").mkdir()
    (tmp_path / "images-evil" / "c.jpg").write_text("a sibling sharing the root's prefix")
    os.symlink(tmp_path / "secret.txt", images / "link-out.jpg")
    os.symlink(tmp_path, images / "dir-out")
    os.symlink(images / "a.jpg", images / "link-in.jpg")
    os.mkfifo(images / "fifo.jpg")
    return images


def file_fetcher(root: Path) -> Fetcher:
    return Fetcher(FetchPolicy(file_root=root.resolve(), max_bytes=10_000))


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "{root}/../secret.txt",
        "{root}/sub/../../secret.txt",
        "{root}/%2e%2e/secret.txt",
        "{root}/%2E%2E%2Fsecret.txt",
        "{root}/..%2fsecret.txt",
        "{root}-evil/c.jpg",
        "{root}/link-out.jpg",  # a file symlink pointing outside
        "{root}/dir-out/secret.txt",  # a directory symlink pointing outside
        "{root}/sub",  # a directory
        "{root}/fifo.jpg",  # a FIFO: opening it would block until someone writes
        "{root}/a.jpg%00.png",  # NUL
    ],
)
def test_file_references_outside_the_root_or_not_plain_files_are_forbidden(
    root: Path, path: str
) -> None:
    url = ImageUrl("file://" + path.format(root=root))
    refused: list[BaseException] = []

    def fetch() -> None:
        try:
            file_fetcher(root).fetch(url)
        except BaseException as exc:
            refused.append(exc)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(2)
    if thread.is_alive():  # blocked on the FIFO: release it before failing
        os.close(os.open(root / "fifo.jpg", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"fetching {url.url} blocked")
    assert len(refused) == 1 and type(refused[0]) is FetchForbiddenError, refused


def test_double_encoding_names_a_file_that_does_not_exist(root: Path) -> None:
    """%252e%252e decodes once, to the literal name "%2e%2e", never to "..": not found."""
    with pytest.raises(FetchError) as missing:
        file_fetcher(root).fetch(ImageUrl(f"file://{root}/%252e%252e/secret.txt"))
    assert type(missing.value) is FetchError and "no such file" in str(missing.value)


def test_symlinks_and_dot_segments_that_stay_inside_the_root_are_read(root: Path) -> None:
    fetch = file_fetcher(root).fetch
    assert fetch(ImageUrl(f"file://{root}/link-in.jpg")) == (BODY, 1)
    assert fetch(ImageUrl(f"file://{root}/sub/../a.jpg")) == (BODY, 1)
    assert fetch(ImageUrl(f"file://localhost{root}/sub/%62.jpg")) == (BODY, 1)
