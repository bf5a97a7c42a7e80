"""How the Points sandbox speaks: its messages, its JSON answers (Laravel's envelope and error shapes) and how it
reads a request body (Laravel's TrimStrings and ConvertEmptyStringsToNull)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from .response import SandboxResponse, bad_gateway, connection_reset, load_json

UNEXPECTED_400 = "The order could not be processed at this time."
MISSING_KEY = "API key is required"
INVALID_KEY = "Invalid or inactive API key"
FORBIDDEN = "Merchant is not allowed to create earning orders"
LOCK_BUSY = "Another earning request is being processed, please retry shortly"
ORDER_NOT_FOUND = "Order not found"
DUPLICATE = "Order number already exists"
TAKEN = "The order number has already been taken."
INVALID_PHONE = "The phone number format is invalid."

_JSON = {"Content-Type": "application/json"}


def json_answer(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> SandboxResponse:
    body = json.dumps(payload, ensure_ascii=False).encode()
    # X-Request-Id: the PHP SDK reads it when present, so a faithful fake sends one.
    return SandboxResponse(status, {**_JSON, "X-Request-Id": uuid.uuid4().hex, **(headers or {})}, body)


def ok(data: Any) -> SandboxResponse:
    return json_answer(200, {"status": True, "message": "", "appended_data": {}, "data": data})


def error(status: int, message: str) -> SandboxResponse:
    return json_answer(status, {"status": False, "message": message, "appended_data": {}})


def validation_error(errors: dict[str, list[str]]) -> SandboxResponse:
    first = next(iter(errors.values()))[0]
    return json_answer(422, {"status": False, "message": first, "appended_data": {}, "errors": errors})


def server_error() -> SandboxResponse:
    return json_answer(500, {"message": "Server Error"})  # Laravel's production answer to an exception


def fault_answer(kind: str) -> SandboxResponse:
    """What Points (or the proxy before it) answers for a fault that strikes before the order is looked at."""
    if kind == "429":
        return error(429, LOCK_BUSY)  # indistinguishable from a real busy lock, on purpose
    if kind == "html":
        return bad_gateway()
    if kind == "reset":
        return connection_reset()
    if kind == "400":
        return error(400, UNEXPECTED_400)
    if kind == "invalid_key":
        return error(400, INVALID_KEY)
    return server_error()


def parse_body(body: bytes) -> tuple[dict[str, Any], SandboxResponse | None]:
    """An empty body is ``{}``; anything else must be a JSON object. Strings are trimmed and ``""`` becomes
    null, as Laravel's TrimStrings and ConvertEmptyStringsToNull middleware do."""
    if not body.strip():
        return {}, None
    try:
        data = load_json(body)
    except (ValueError, UnicodeDecodeError):
        return {}, error(400, "The request body is not valid JSON.")
    if not isinstance(data, dict):
        return {}, error(400, "The request body must be a JSON object.")
    return trim(data), None


def trim(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        return {k: trim(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trim(v) for v in value]
    return value
