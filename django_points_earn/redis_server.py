"""A private Redis for the demo and for tests (ours and shops'): a real ``redis-server`` when the binary exists,
an embedded one (fakeredis over TCP, in its own process) only where none can be had. It always says which.

``python -m django_points_earn.redis_server --embedded --port N`` is the embedded server's process.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RunningRedis:
    port: int
    kind: str  # "redis-server" or "embedded"
    process: subprocess.Popen | None = field(default=None, repr=False)
    workdir: str = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def describe(self) -> str:
        if self.kind == "redis-server":
            return f"private redis-server on 127.0.0.1:{self.port}"
        return f"embedded Redis (fakeredis; no redis-server binary found) on 127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = ""

    def restart(self) -> None:
        """Stop and start on the same port with nothing kept: what a Redis crash without persistence does."""
        self.stop()
        started = start_redis(port=self.port, prefer=self.kind)
        self.process, self.workdir = started.process, started.workdir


def start_redis(*, port: int | None = None, prefer: str = "auto", timeout: float = 15.0) -> RunningRedis:
    port = port or free_port()
    binary = shutil.which("redis-server")
    if binary and prefer in ("auto", "redis-server"):
        workdir = tempfile.mkdtemp(prefix="points-earn-redis-")
        cmd = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        kind = "redis-server"
    else:
        try:
            import fakeredis  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "No Redis available: install the redis-server binary (apt-get install redis-server) or the "
                "embedded fallback (pip install 'django-points-earn[embedded-redis]')."
            ) from None
        workdir = ""
        cmd = [sys.executable, "-m", "django_points_earn.redis_server", "--embedded", "--port", str(port)]
        kind = "embedded"
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603 (our own argv)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(port):
            return RunningRedis(port=port, kind=kind, process=process, workdir=workdir)
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"{kind} exited at start (code {process.returncode}): {err.strip()}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{kind} did not answer PING on port {port} within {timeout:.0f}s")


def _serve_embedded(port: int) -> None:
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.daemon_threads = True
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedded", action="store_true", required=True)
    parser.add_argument("--port", type=int, required=True)
    _serve_embedded(parser.parse_args().port)
