"""The sandbox inside ``responses``: fast in-process tests that still talk to a stateful Points.

    with responses.RequestsMock() as rsps:
        sandbox = PointsSandbox()
        register_responses(rsps, sandbox)
        requests.post("https://sandbox.papp.sa/api/v1/orders/earning", json=..., headers=...)

Latency really sleeps (so concurrent callers overlap for real); a ``slow`` fault raises ``ReadTimeout``
at once after the work is done, and ``reset`` raises ``ConnectionError`` with nothing done.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests
import responses

from .points import PointsSandbox, raising_timeouts

DEFAULT_BASE_URL = "https://sandbox.papp.sa/api/v1"


class _SandboxCallback(responses.CallbackResponse):
    """One registration for every HTTP method under the base URL (so an unused method is not "unfired")."""

    def __init__(self, pattern: re.Pattern[str], callback: Any) -> None:
        super().__init__("ANY", pattern, callback, content_type=None)
        self._pattern = pattern

    def matches(self, request: Any) -> tuple[bool, str]:
        if self._pattern.match(str(request.url)):
            return True, ""
        return False, "URL is not under the sandbox base URL"


def register_responses(
    rsps: responses.RequestsMock, sandbox: PointsSandbox, base_url: str = DEFAULT_BASE_URL
) -> responses.BaseResponse:
    """Route every request under ``base_url`` (any method) to ``sandbox.handle``; returns the registration."""
    base_url = base_url.rstrip("/")
    base_path = urlsplit(base_url).path
    pattern = re.compile(re.escape(base_url) + r"(?:[/?].*)?$")

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(str(request.url))
        path = parts.path[len(base_path) :] or "/"
        if parts.query:
            path += "?" + parts.query
        body = request.body if isinstance(request.body, bytes | str) else None
        with raising_timeouts():
            answer = sandbox.handle(request.method or "GET", path, dict(request.headers), body)
        if answer.fault == "timeout":
            return 0, {}, requests.exceptions.ReadTimeout("Read timed out. (points sandbox: slow fault)")
        if answer.fault == "reset":
            return (
                0,
                {},
                requests.exceptions.ConnectionError(
                    "Connection aborted: connection reset by peer (points sandbox: reset fault)"
                ),
            )
        return answer.status, answer.headers, answer.body

    return rsps.add(_SandboxCallback(pattern, callback))
