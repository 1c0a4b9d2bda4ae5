"""Fixtures for the data tests: a local HTTP server (no internet needed) and a shared cache."""

from __future__ import annotations

import collections
import functools
import http.server
import threading
import time
from pathlib import Path

import pytest

DRIP_INTERVAL_S = 0.2  # /drip/ sends one byte this often: never a per-read timeout
STALL_S = 5.0  # /stall/ goes silent this long after its first byte
ENDLESS_CHUNK = b"x" * 1024


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``server.root`` and counts GETs per path; misbehaving servers by path prefix.

    - ``/truncated/<n>``: promises 1000 bytes, sends 10 and hangs up.
    - ``/drip/<n>``: promises ``n`` bytes and sends one every ``DRIP_INTERVAL_S``.
    - ``/stall/<n>``: promises 10 bytes, sends one, then says nothing for ``STALL_S``.
    - ``/endless/<n>``: no Content-Length, and a body that never ends.
    - ``/huge/<n>``: promises 10**12 bytes, sends 10 and hangs up.
    - ``/nolength/<name>``: the served file ``<name>`` without a Content-Length.
    """

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.counts[self.path] += 1
        prefix = self.path.split("/")[1]
        try:
            if prefix in ("truncated", "huge"):
                # Promise more bytes than are sent, then hang up: a transfer cut short.
                self._send_head(1000 if prefix == "truncated" else 10**12)
                self.wfile.write(b"x" * 10)
            elif prefix == "drip":
                self._send_head(int(self.path.split("/")[2]))
                self._drip(int(self.path.split("/")[2]))
            elif prefix == "stall":
                self._send_head(10)
                self.wfile.write(b"x")
                time.sleep(STALL_S)
            elif prefix == "endless":
                self._send_head(None)
                self._endless()
            elif prefix == "nolength":
                self._send_head(None)
                self.wfile.write((Path(self.directory) / self.path.split("/", 2)[2]).read_bytes())
            else:
                super().do_GET()
                return
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: as it should
            pass
        self.close_connection = True

    def _send_head(self, length: int | None) -> None:
        """200 and, unless ``length`` is None, a Content-Length (HTTP/1.0: the body then ends
        when the connection closes)."""
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()

    def _drip(self, length: int) -> None:
        for _ in range(length):
            self.wfile.write(b"x")
            time.sleep(DRIP_INTERVAL_S)

    def _endless(self) -> None:
        stop = time.monotonic() + 30.0  # a safety stop if a client never hangs up
        while time.monotonic() < stop:
            self.wfile.write(ENDLESS_CHUNK)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


class LocalServer:
    """``url(name)`` of a file written with ``add(name, data)``; ``count(name)`` requests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.counts = collections.Counter()
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def url(self, name: str) -> str:
        return self.base_url + name

    def add(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self.url(name)

    def count(self, name: str) -> int:
        with self.httpd.lock:
            return self.httpd.counts["/" + name]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path):
    """A fresh local HTTP server per test, serving ``tmp_path / "served"``."""
    root = tmp_path / "served"
    root.mkdir()
    local = LocalServer(root)
    try:
        yield local
    finally:
        local.close()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache directory for the whole session, so mnist1d is generated once."""
    return tmp_path_factory.mktemp("cnnlab-cache")
