"""The sandboxes inside ``responses``: fast in-process tests that still talk to a stateful platform.

    with responses.RequestsMock() as rsps:
        sandbox = PointsSandbox()
        register_responses(rsps, sandbox)
        requests.post("https://sandbox.papp.sa/api/v1/orders/earning", json=..., headers=...)
        register_fabric_responses(rsps, FabricSandbox())  # fabric's API and token endpoint, on one mock

Latency really sleeps (so concurrent callers overlap for real); a ``slow`` fault raises ``ReadTimeout``
at once after the work is done, and ``reset`` raises ``ConnectionError`` with nothing done.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
import responses

from .fabric import FabricSandbox
from .faults import raising_timeouts
from .points import PointsSandbox
from .response import SandboxResponse

DEFAULT_BASE_URL = "https://sandbox.papp.sa/api/v1"
# Reserved .test names: a request that escapes the mock can never reach a real fabric tenant.
DEFAULT_FABRIC_BASE_URL = "https://loyalty.fabric.test/api"
DEFAULT_FABRIC_TOKEN_URL = "https://login.fabric.test/oauth2/default/v1/token"  # noqa: S105 - a URL


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
    return _register(rsps, base_url, sandbox.handle, "points")


def register_fabric_responses(
    rsps: responses.RequestsMock,
    sandbox: FabricSandbox,
    base_url: str = DEFAULT_FABRIC_BASE_URL,
    token_url: str = DEFAULT_FABRIC_TOKEN_URL,
) -> tuple[responses.BaseResponse, responses.BaseResponse]:
    """Route ``base_url`` to the fabric sandbox's API and ``token_url`` to its token endpoint."""
    api = _register(rsps, base_url, sandbox.handle_api, "fabric")
    token = _register(rsps, token_url, sandbox.handle_token, "fabric", exact=True)
    return api, token


def _register(
    rsps: responses.RequestsMock,
    base_url: str,
    handle: Callable[..., SandboxResponse],
    name: str,
    *,
    exact: bool = False,
) -> responses.BaseResponse:
    base_url = base_url.rstrip("/")
    base_path = urlsplit(base_url).path
    pattern = re.compile(re.escape(base_url) + (r"(?:\?.*)?$" if exact else r"(?:[/?].*)?$"))

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(str(request.url))
        path = parts.path[len(base_path) :] or "/"
        if parts.query:
            path += "?" + parts.query
        body = request.body if isinstance(request.body, bytes | str) else None
        with raising_timeouts():
            answer = handle(request.method or "GET", path, dict(request.headers), body)
        if answer.fault == "timeout":
            return 0, {}, requests.exceptions.ReadTimeout(f"Read timed out. ({name} sandbox: slow fault)")
        if answer.fault == "reset":
            return (
                0,
                {},
                requests.exceptions.ConnectionError(
                    f"Connection aborted: connection reset by peer ({name} sandbox: reset fault)"
                ),
            )
        return answer.status, answer.headers, answer.body

    return rsps.add(_SandboxCallback(pattern, callback))
