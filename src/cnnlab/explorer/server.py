"""``cnnlab serve``'s HTTP side: Python's ``ThreadingHTTPServer`` serving one page (three
files of this package's ``static/`` folder, nothing else) and the JSON API that
:class:`~.session.Explorer` answers.

What keeps it safe on a laptop (the README's "cnnlab serve" lists the same):

- it binds 127.0.0.1 unless told otherwise;
- the ``Host`` header must name this server (an IP literal, localhost, the bound name or
  this machine's name, with the bound port), which defeats DNS rebinding;
- API requests from another origin are refused (``Origin`` must be this server,
  ``Sec-Fetch-Site`` same-origin), POST bodies must be ``application/json`` (so a page
  elsewhere cannot send one without a CORS preflight, which gets no permissive answer),
  and no response carries an ``Access-Control-Allow-*`` header;
- only the page's own files are served, by exact name: ``/../`` and encoded variants are
  404; the Content-Security-Policy lets the page load nothing from any other host;
- bodies are limited to :data:`MAX_BODY` bytes, and every bad request gets a JSON
  ``{"error": ...}`` with 400 (or 403, 404, 405, 411, 413, 415) while the server goes on.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .session import Explorer, RequestError

MAX_BODY = 4 * 1024 * 1024  # a 3x128x128 input as JSON is about 1 MB
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
          "/explorer.css": ("explorer.css", "text/css; charset=utf-8")}
POST_ROUTES = {"/api/forward": "forward", "/api/inspect": "inspect",
               "/api/visualise": "visualise", "/api/consistency": "consistency"}
GET_ROUTES = {"/api/model": "model_info", "/api/lecture-example": "lecture_example",
              "/api/example": "example"}
SECURITY_HEADERS = {
    # The page loads its script, style and data from this server only; images it draws
    # itself (canvas) or embeds as data URIs.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = ("localhost",)


def _reject_constant(name: str) -> Any:
    raise RequestError(f"the body holds {name}, which is not a number the model can take")


def _load_assets() -> dict[str, bytes]:
    folder = resources.files("cnnlab.explorer") / "static"
    return {name: (folder / name).read_bytes() for name, _ in set(ASSETS.values())}


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the :class:`Explorer`, the page's files and the
    names its ``Host`` header may carry."""

    daemon_threads = True  # a client that hangs does not hold Ctrl-C up
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, explorer: Explorer, host: str, port: int, *,
                 quiet: bool = True) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), ExplorerHandler)
        self.explorer, self.quiet = explorer, quiet
        self.assets = _load_assets()
        self.host_names = {host.lower().strip("[]"), *LOOPBACK_NAMES,
                           socket.gethostname().lower(), socket.getfqdn().lower()}

    @property
    def url(self) -> str:
        host = self.server_address[0]
        shown = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::"):
            shown = "127.0.0.1"
        return f"http://{shown}:{self.server_port}/"

    def host_allowed(self, header: str | None) -> bool:
        """Whether a ``Host`` header names this server: the bound port, and an IP literal,
        localhost, the bound name or this machine's name (never another domain, which is
        what a DNS-rebinding page would send)."""
        if not header:
            return False
        header = header.strip().lower()
        if header.startswith("["):
            name, _, rest = header[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, port_text = header.partition(":")
        try:
            port = int(port_text) if port_text else 80
        except ValueError:
            return False
        if port != self.server_port:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.host_names


class ExplorerHandler(BaseHTTPRequestHandler):
    """One request: a page file, or an API call answered as JSON."""

    server: ExplorerServer
    server_version = "cnnlab-serve"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may take to send a request
    # Headers and body leave in two writes; with Nagle's algorithm the second waits for
    # the client's delayed ACK, 40 ms on Linux: the round trip went from 44 ms to ~5.
    disable_nagle_algorithm = True

    # ---- responses ----------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; nothing to tell it

    def _json(self, status: int, value: Any) -> None:
        body = json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, an unknown method) as JSON
        with the same headers as every answer."""
        self.close_connection = True
        self._error(code, message or HTTPStatus(code).phrase)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"serve: {self.address_string()} {format % args}\n")

    # ---- checks -------------------------------------------------------------------------

    def _checked(self, api: bool) -> bool:
        """The Host header names this server; an API request comes from this origin."""
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(403, f"Host {self.headers.get('Host')!r} does not name this server")
            return False
        if not api:
            return True
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{self.headers['Host']}".lower():
            self._error(403, f"cross-origin request from {origin!r} refused")
            return False
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            self._error(403, f"{site} request refused: the API answers this page only")
            return False
        return True

    def _body(self) -> Any:
        """The request's JSON body, or None after answering an error."""
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            self._error(415, f"the body must be application/json, got {content_type!r}")
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self._error(411, "Content-Length is required")
            return None
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self._error(400, f"Content-Length must be a byte count, got {length_text!r}")
            self.close_connection = True
            return None
        if length > MAX_BODY:
            self.close_connection = True  # its body is left unread
            self._error(413, f"the body may hold at most {MAX_BODY:,} bytes, got {length:,}")
            return None
        try:
            raw = self.rfile.read(length)
        except (TimeoutError, OSError):
            self.close_connection = True
            return None
        if len(raw) < length:
            self.close_connection = True
            return None
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except RequestError as error:
            self._error(400, str(error))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._error(400, f"the body is not JSON: {error}")
        except RecursionError:
            self._error(400, "the body's JSON is nested too deeply")
        return None

    # ---- methods ------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        api = path.startswith("/api/")
        if not self._checked(api):
            return
        if path in ASSETS:
            name, content_type = ASSETS[path]
            self._send(200, self.server.assets[name], content_type)
        elif path in POST_ROUTES:
            self._error(405, f"{path} takes POST with a JSON body")
        elif path in GET_ROUTES:
            method = getattr(self.server.explorer, GET_ROUTES[path])
            if path == "/api/example":
                index = parse_qs(urlsplit(self.path).query).get("index", [None])[0]
                self._answer(lambda: method(index))
            else:
                self._answer(method)
        else:
            self._error(404, f"no such page: {path}")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if not self._checked(api=True):
            self.close_connection = True
            return
        if path not in POST_ROUTES:
            self.close_connection = True
            self._error(405 if path in ASSETS or path in GET_ROUTES else 404,
                        f"no API at POST {path}")
            return
        payload = self._body()
        if payload is None:
            return
        method = getattr(self.server.explorer, POST_ROUTES[path])
        self._answer(lambda: method(payload))

    def _answer(self, compute: Callable[[], Any]) -> None:
        try:
            result = compute()
        except RequestError as error:
            self._error(400, str(error))
            return
        except Exception as error:  # a bug must not stop the server; say what it was
            traceback.print_exc(file=sys.stderr)
            self._error(500, f"{type(error).__name__}: {error}")
            return
        self._json(200, result)


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8765, *,
                quiet: bool = True) -> ExplorerServer:
    """A server for ``explorer`` bound to ``host:port`` (port 0: a free one), not yet
    serving: call ``serve_forever()`` (in a thread, in tests) and ``server_close()``."""
    return ExplorerServer(explorer, host, port, quiet=quiet)


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8765, *,
          open_browser: bool = False, say: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C, then release the port and return (no traceback)."""
    server = make_server(explorer, host, port)
    try:
        say(f"cnnlab serve: {explorer.loaded.name} at {server.url} (Ctrl-C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        say("cnnlab serve: stopped")
    finally:
        server.server_close()


__all__ = ["MAX_BODY", "ExplorerServer", "make_server", "serve"]
