"""What every platform's sandbox answers with: an HTTP-ish :class:`SandboxResponse` a transport plays, the
answers no platform writes itself (a proxy's 502 page, a dropped connection), and the body helpers around them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class SandboxResponse:
    """What the platform answers. ``fault`` tells a transport to misbehave instead of (or besides) answering:

    - ``"timeout"``: the work is done but the client must see a read timeout;
    - ``"reset"``: drop the connection without answering (nothing was done);
    - ``None``: answer normally.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    fault: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


def bad_gateway() -> SandboxResponse:
    """The 502 page of the nginx in front of a platform: HTML where the client expects JSON."""
    return SandboxResponse(502, {"Content-Type": "text/html"}, BAD_GATEWAY_HTML)


def connection_reset() -> SandboxResponse:
    """No HTTP answer at all (status 0): the transport drops the connection."""
    return SandboxResponse(0, {}, b"", fault="reset")


def as_bytes(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(body: bytes) -> Any:
    """Strict JSON (``NaN``/``Infinity`` refused); raises ``ValueError`` (``UnicodeDecodeError`` included)."""
    return json.loads(body, parse_constant=_reject_constant)
