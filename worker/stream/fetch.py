"""Image bytes for an upload event: inline, `file://` under one root, or `http(s)://` from
allowed hosts. `s3://` is not supported in this build.

Every reference is checked before any I/O: a file path must resolve (symlinks followed) to a
regular file inside `file_root`; an http(s) host must be on the allow-list and, unless
`allow_private`, resolve only to globally routable addresses (no loopback, private, shared
(CGNAT), link-local, multicast or reserved ranges, nor IPv6 forms that embed one: the usual SSRF
targets), and the connection goes to the address that was checked, so a second DNS answer cannot
swap it. Redirects are not followed. The whole response (status line, headers, body) must
arrive within `read_timeout_s`, so a server that trickles bytes cannot hold a decode thread.
Transient failures (timeouts, connection errors, HTTP 5xx, 408 and 429) are retried with
exponential backoff; the rest fail at once.

The network sits behind two seams that tests replace: `Resolver` (host, port -> addresses) and
`HttpTransport` (one GET to a checked address).
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import FetchError, FetchForbiddenError, ImageTooLargeError
from .events import ImageRef, InlineImage
from .settings import Settings

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

USER_AGENT = "cropworker/0.1"
CHUNK_BYTES = 64 * 1024
_RETRYABLE_STATUS = frozenset({408, 429})
_URL_CHARS = re.compile(r"[!-~]+")  # printable ASCII: http.client sends nothing else

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class FetchPolicy:
    file_root: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    max_bytes: int = 50 * 1024 * 1024
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    attempts: int = 3
    backoff_s: float = 0.2

    @classmethod
    def from_settings(cls, s: Settings) -> FetchPolicy:
        return cls(
            file_root=s.file_root.resolve() if s.file_root else None,
            allowed_hosts=tuple(h.lower() for h in s.http_allowed_hosts),
            allow_private=s.http_allow_private,
            max_bytes=s.max_image_bytes,
            connect_timeout_s=s.fetch_connect_timeout_s,
            read_timeout_s=s.fetch_read_timeout_s,
            attempts=s.fetch_attempts,
            backoff_s=s.fetch_backoff_s,
        )


class HttpTransport(Protocol):
    def get(self, url: SplitResult, address: str, policy: FetchPolicy) -> bytes:
        """GET `url` from `address` (already checked). Raises `FetchError` (with `retryable`) or
        `ImageTooLargeError` for a body over `policy.max_bytes`."""
        ...


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}: {exc}", retryable=True) from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Fetcher:
    """Turns an `ImageRef` into bytes under a `FetchPolicy`."""

    def __init__(
        self,
        policy: FetchPolicy,
        transport: HttpTransport | None = None,
        resolver: Resolver = resolve,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self.transport = transport or HttpClientTransport()
        self.resolver = resolver
        self.sleep = sleep

    def fetch(self, ref: ImageRef) -> tuple[bytes, int]:
        """(bytes, attempts made). Raises `FetchError` (its `attempts` set) or `ImageError`."""
        if isinstance(ref, InlineImage):
            return ref.data, 1
        attempt = 1
        while True:
            try:
                return self._fetch_once(ref.url), attempt
            except FetchError as exc:
                exc.attempts = attempt
                if not exc.retryable or attempt >= self.policy.attempts:
                    raise
            self.sleep(self.policy.backoff_s * 2 ** (attempt - 1))
            attempt += 1

    def _fetch_once(self, url: str) -> bytes:
        if not _URL_CHARS.fullmatch(url):
            raise FetchForbiddenError("reference is not printable ASCII (percent-encode it)")
        parsed = urlsplit(url)
        if parsed.scheme == "file":
            return self._read_file(parsed)
        if parsed.scheme in ("http", "https"):
            return self._get(parsed)
        raise FetchForbiddenError(f"unsupported reference scheme {parsed.scheme!r}")

    def _read_file(self, url: SplitResult) -> bytes:
        root = self.policy.file_root
        if root is None:
            raise FetchForbiddenError("file:// references are disabled (no file_root set)")
        if url.netloc not in ("", "localhost"):
            raise FetchForbiddenError(f"file:// reference names a host: {url.netloc!r}")
        try:
            path = Path(unquote(url.path)).resolve(strict=True)
        except FileNotFoundError as exc:
            raise FetchError(f"no such file: {unquote(url.path)}") from exc
        except (OSError, ValueError) as exc:
            raise FetchForbiddenError(f"unusable file path: {exc}") from exc
        if not path.is_relative_to(root):
            raise FetchForbiddenError(f"{unquote(url.path)} is outside {root}")
        if not path.is_file():  # a FIFO or device under the root would block or never end
            raise FetchForbiddenError(f"{path} is not a regular file")
        try:
            with path.open("rb") as f:
                data = f.read(self.policy.max_bytes + 1)
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc}") from exc
        if len(data) > self.policy.max_bytes:
            raise ImageTooLargeError(f"{path} is over the limit of {self.policy.max_bytes} bytes")
        return data

    def _get(self, url: SplitResult) -> bytes:
        host = (url.hostname or "").lower()
        if not host_allowed(host, self.policy.allowed_hosts):
            raise FetchForbiddenError(f"host {host!r} is not in the allow-list")
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchForbiddenError(f"bad port in {url.geturl()!r}") from exc
        addresses = self.resolver(host, port)
        if not addresses:
            raise FetchError(f"{host} resolved to no address", retryable=True)
        if not self.policy.allow_private:
            for address in addresses:
                if not is_public(address):
                    raise FetchForbiddenError(f"{host} resolves to non-public address {address}")
        return self.transport.get(url, addresses[0], self.policy)


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Exact names, or `*.example.com` for any subdomain of example.com (not itself)."""
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def is_public(address: str) -> bool:
    """Globally routable, and so not an SSRF target. IPv4-mapped (::ffff:a.b.c.d) and 6to4
    (2002:AABB:CCDD::) addresses are judged by the IPv4 address they reach."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a checked address while naming the original host (Host header)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As `_PinnedHTTPConnection`, with TLS verified against the original host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


class HttpClientTransport:
    """`HttpTransport` over the standard library: one connection per request, a connect timeout,
    then `read_timeout_s` for the whole response."""

    def get(self, url: SplitResult, address: str, policy: FetchPolicy) -> bytes:
        kind = _PinnedHTTPSConnection if url.scheme == "https" else _PinnedHTTPConnection
        port = url.port or (443 if url.scheme == "https" else 80)
        conn = kind(url.hostname or "", port, address, policy.connect_timeout_s)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        response: http.client.HTTPResponse | None = None
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(policy.read_timeout_s)
            conn.response_class = _deadline_response(time.monotonic() + policy.read_timeout_s)
            conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
            response = conn.getresponse()
            if response.status != 200:
                retryable = response.status >= 500 or response.status in _RETRYABLE_STATUS
                raise FetchError(f"HTTP {response.status} from {url.geturl()}", retryable=retryable)
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise ImageTooLargeError(f"{length} bytes announced, limit {policy.max_bytes}")
            return _read_body(response, policy.max_bytes)
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(f"TLS verification failed for {url.hostname}: {exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"GET {url.geturl()} failed: {exc!r}", retryable=True) from exc
        finally:
            if response is not None:
                response.close()
            conn.close()


def _read_body(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    chunks, total = [], 0
    while chunk := response.read(CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise ImageTooLargeError(f"response is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _DeadlineReader(io.RawIOBase):
    """A socket read with what is left until `deadline` as the timeout of every receive. A
    socket timeout alone bounds each receive, so one byte every few seconds would never trip it;
    this bounds them all together."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        # A reader made by the socket keeps it open until the response is closed, even after
        # http.client closes the connection (as it does at once for "Connection: close").
        self.raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the response did not arrive in time")
        self.sock.settimeout(left)
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


def _deadline_response(deadline: float) -> type[http.client.HTTPResponse]:
    """An `HTTPResponse` class (http.client builds the response itself) that reads the status
    line, the headers and the body through a `_DeadlineReader`."""

    class DeadlineResponse(http.client.HTTPResponse):
        def __init__(
            self,
            sock: socket.socket,
            debuglevel: int = 0,
            method: str | None = None,
            url: str | None = None,
        ) -> None:
            super().__init__(sock, debuglevel, method, url)
            self.fp.close()  # the base class's own reader, never read from
            self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))

    return DeadlineResponse
