"""Fixtures for the data tests: a local HTTP server (no internet needed) and a shared cache."""

from __future__ import annotations

import collections
import functools
import http.server
import threading
from pathlib import Path

import pytest


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``server.root``; counts GETs per path; ``/truncated/<n>`` lies about its length."""

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.counts[self.path] += 1
        if self.path.startswith("/truncated/"):
            # Promise more bytes than are sent, then hang up: a transfer cut short.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

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
