"""The sandbox over real HTTP: a threaded server on a loopback address, in a background thread.

Platforms are mounted under path prefixes: Points under ``/api/v1`` (its test controls under ``/__sandbox__``),
fabric under ``/fabric`` (API at ``/fabric/api``, token endpoint at ``/fabric/oauth2/default/v1/token``, test
controls under ``/__sandbox__/fabric``). ``server.mount(prefix, handler)`` adds others.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .fabric import API_PREFIX as FABRIC_API
from .fabric import TOKEN_PATH as FABRIC_TOKEN_PATH
from .fabric import FabricSandbox
from .points import PointsSandbox
from .response import SandboxResponse
from .timing import request_arrived

logger = logging.getLogger(__name__)

POINTS_PREFIX = "/api/v1"
CONTROL_PREFIX = "/__sandbox__"
FABRIC_PREFIX = "/fabric"
FABRIC_CONTROL_PREFIX = "/__sandbox__/fabric"

# (method, path relative to the mount, headers, body) -> response
Handler = Callable[[str, str, Mapping[str, str], bytes], SandboxResponse]


def check_loopback(host: str) -> str:
    """Return the address to bind for ``host``, or raise ValueError unless it is a loopback address.

    The sandbox accepts any key it was given and has open control endpoints: it must never face a network.
    """
    if host.strip().lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(f"the sandbox only listens on a loopback address (127.0.0.1, ::1 or localhost), not {host!r}")
    return str(address)


class SandboxServer:
    """A threaded HTTP server for the sandboxes, in a background thread; also a context manager::

        with SandboxServer(PointsSandbox(), fabric=FabricSandbox()) as server:
            requests.post(server.points_base_url + "/orders/earning", ...)
            requests.post(server.fabric_token_url, ...)

    ``port=0`` picks a free port; read it back from :attr:`url` once started. Either platform may be left out.
    """

    def __init__(
        self,
        sandbox: PointsSandbox | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        verbose: bool = False,
        fabric: FabricSandbox | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.fabric = fabric
        self.host = check_loopback(host)
        self.port = port
        self.verbose = verbose
        self._mounts: list[tuple[str, Handler]] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Looked up per request, so a test may wrap sandbox.handle after the server started.
        if sandbox is not None:
            self.mount(POINTS_PREFIX, lambda *request: self.sandbox.handle(*request))
            self.mount(CONTROL_PREFIX, lambda *request: self.sandbox.control(*request))
        if fabric is not None:
            self.mount(FABRIC_PREFIX, lambda *request: self.fabric.handle(*request))
            self.mount(FABRIC_CONTROL_PREFIX, lambda *request: self.fabric.control(*request))

    def mount(self, prefix: str, handler: Handler) -> None:
        """Route every path under ``prefix`` to ``handler`` (the path it sees is relative to the prefix)."""
        prefix = "/" + prefix.strip("/")
        self._mounts = sorted([*self._mounts, (prefix, handler)], key=lambda m: len(m[0]), reverse=True)

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._httpd.server_address[1]}"

    @property
    def points_base_url(self) -> str:
        return self.url + POINTS_PREFIX

    @property
    def control_url(self) -> str:
        return self.url + CONTROL_PREFIX

    @property
    def fabric_base_url(self) -> str:
        return self.url + FABRIC_PREFIX + FABRIC_API

    @property
    def fabric_token_url(self) -> str:
        return self.url + FABRIC_PREFIX + FABRIC_TOKEN_PATH

    @property
    def fabric_control_url(self) -> str:
        return self.url + FABRIC_CONTROL_PREFIX

    def start(self) -> SandboxServer:
        if self._httpd is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._httpd = _HTTPServer((self.host, self.port), self, family)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="points-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def dispatch(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> SandboxResponse:
        """Route one request (``target`` is the request path with its query) to the mounted handler."""
        path = target.split("?", 1)[0]
        for prefix, handler in self._mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return handler(method, target[len(prefix) :] or "/", headers, body)
        body_json = {"status": False, "message": "Not found", "appended_data": {}}
        return SandboxResponse(404, {"Content-Type": "application/json"}, json.dumps(body_json).encode())


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a request stuck in a "slow" fault must not keep the process alive

    def __init__(self, address: tuple[str, int], app: SandboxServer, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.app = app
        self._resets: set[Any] = set()
        self._resets_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall; the name is not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def reset_on_close(self, request: socket.socket) -> None:
        with self._resets_lock:
            self._resets.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._resets_lock:
            reset = request in self._resets
            self._resets.discard(request)
        if not reset:
            super().shutdown_request(request)
            return
        # SO_LINGER 0 and no shutdown(): close() sends an RST, so the client sees "connection reset by peer".
        try:
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts) make writes fail; that is expected here, not worth a traceback.
        if self.app.verbose:
            logger.exception("sandbox: error while serving %s", client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real platform behind its load balancer
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus delayed ACK adds ~40 ms per answer
    # on a kept-alive connection, which would swamp the latency the sandbox is asked to inject.
    disable_nagle_algorithm = True
    server_version = "PointsSandbox/1.0"
    timeout = 60  # idle keep-alive connections are closed after this
    server: _HTTPServer

    def parse_request(self) -> bool:
        self.arrived = time.monotonic()  # the request line is in: the round trip's clock starts (see timing.py)
        return super().parse_request()

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        body = self._read_body()
        app = self.server.app
        try:
            with request_arrived(self.arrived):
                response = app.dispatch(self.command, self.path, dict(self.headers.items()), body)
        except Exception:
            logger.exception("sandbox: %s %s failed", self.command, self.path.split("?", 1)[0])
            payload = json.dumps({"message": "Server Error"}).encode()
            response = SandboxResponse(500, {"Content-Type": "application/json"}, payload)
        if response.fault == "reset":
            self.server.reset_on_close(self.connection)
            self.close_connection = True
            return
        # fault == "timeout": handle() already slept while holding the lock; answering late is the point.
        self._send(response)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: SandboxResponse) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a "slow" fault did its job)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line (without its query: fabric's member lookup carries a phone there) and status,
        # and only when asked: never headers (x-api-key, bearer tokens, Basic credentials), never bodies.
        if self.server.app.verbose:
            args = tuple(_QUERY.sub("?…", a) if isinstance(a, str) else a for a in args)
            logger.info("sandbox: " + format, *args)


_QUERY = re.compile(r"\?[^ ]*")


def serve(
    sandbox: PointsSandbox | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    verbose: bool = False,
    fabric: FabricSandbox | None = None,
) -> SandboxServer:
    """Start a :class:`SandboxServer` for the sandboxes and return it (call ``.stop()`` when done)."""
    return SandboxServer(sandbox, host, port, verbose=verbose, fabric=fabric).start()
