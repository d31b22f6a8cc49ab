"""A local HTTP server on 127.0.0.1 (ephemeral port) with good and misbehaving routes.

Shared by ``test_download.py`` and ``test_images.py``. Routes are registered per test as
``server.routes[path] = Route(...)``; every request is counted in ``server.hits[path]``.
Nothing here talks to the internet.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
from PIL import Image


@dataclass
class Route:
    """What the server answers for one path.

    Attributes:
        body: Response body.
        status: HTTP status code.
        content_type: ``Content-Type`` header.
        send_length: Send ``Content-Length`` (otherwise the body ends when the connection closes).
        headers: Extra headers, e.g. ``{"Location": ...}``.
        delay_s: Sleep before answering (interrupted at server shutdown).
        fail_first: Answer the first ``fail_first`` requests with HTTP 500.
    """

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    send_length: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    fail_first: int = 0


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request, client_address) -> None:  # noqa: D401
        """Clients that hang up early (timeouts, size limits) are expected; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits[self.path] += 1
            hits = self.server.hits[self.path]
        route = self.server.routes.get(self.path)
        if route is None:
            route = Route(body=b"not found", status=404, content_type="text/plain")
        if route.delay_s:
            self.server.stopping.wait(route.delay_s)
        if hits <= route.fail_first:
            route = Route(body=b"try again", status=500, content_type="text/plain")
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        for key, value in route.headers.items():
            self.send_header(key, value)
        if route.send_length:
            self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body)


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """A running :class:`LocalServer`; proxies are bypassed for 127.0.0.1; shut down after the test."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = LocalServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url(path: str = "/x.jpg") -> str:
    """An http URL on 127.0.0.1 whose port has nothing listening (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def jpeg_bytes(width: int = 8, height: int = 6, color: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png_bytes(width: int = 5, height: int = 4, mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 20, 30, 255) if mode == "RGBA" else 0).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit grayscale PNG of ``side x side`` zeros: tens of KB on the wire,
    ``side**2`` pixels (400 M for the default) once decoded."""
    row = bytes(1 + (side + 7) // 8)  # filter byte 0 + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
