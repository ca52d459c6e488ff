"""Local servers that misbehave: they count connections, stall, trickle bytes or redirect. Real
sockets on 127.0.0.1, so the fetcher's own transport and timeouts are what is tested."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = Callable[[socket.socket, threading.Event], None]
TRICKLE_INTERVAL_S = 0.2


class Server:
    """Accepts connections on 127.0.0.1 and hands each to `behaviour` in its own thread."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)  # so the accept loop notices `close`
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                conn.recv(65536)  # the request
                self.behaviour(conn, self.stopped)
            except OSError:
                pass  # the client gave up first: that is the point of most of these

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


def stall(conn: socket.socket, stopped: threading.Event) -> None:
    """Accept, read the request, then send nothing."""
    stopped.wait(10)


def trickle(response: bytes, after: int = 0) -> Behaviour:
    """Send the first `after` bytes at once, then one byte every `TRICKLE_INTERVAL_S`."""

    def behaviour(conn: socket.socket, stopped: threading.Event) -> None:
        conn.sendall(response[:after])
        for i in range(after, len(response)):
            if stopped.wait(TRICKLE_INTERVAL_S):
                return
            conn.sendall(response[i : i + 1])

    return behaviour


def http_response(body: bytes, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


class Redirector:
    """A real `http.server` that answers every GET with `status` and a Location header."""

    def __init__(self, status: int, location: str) -> None:
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.seen = seen
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
