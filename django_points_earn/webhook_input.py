"""What a webhook body must be before it is stored: JSON, an object with an ``event``, shallow, and made only of
values every supported database can keep.

Python's JSON parser accepts more than PostgreSQL (and even SQLite's UTF-8 encoder) can store: a lone surrogate
(``"\\ud800"``) cannot be encoded, a NUL (``"\\u0000"``) is refused by PostgreSQL's text and ``jsonb``, ``NaN``,
``Infinity`` and ``1e400`` are not JSON at all to ``jsonb``, and a deeply nested array overflows the parser's
recursion. Each of these is refused here with a message that names the place, so the view answers 400 instead
of 500 and never stores half of a delivery.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # a Points delivery nests 3 levels (body -> order -> lines); JSONField/jsonb need far less than 1000
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class BadBody(ValueError):
    """The body cannot be accepted; the message says exactly why (and never repeats the body)."""


def _constant(name: str) -> Any:
    raise BadBody(f"body is not JSON: {name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadBody(f"body is not JSON that can be stored: the number {text[:40]} is out of range")
    return value


def parse(body: bytes) -> dict[str, Any]:
    """The delivery as a dict with a text ``event``, or :class:`BadBody`."""
    try:
        payload = json.loads(body, parse_constant=_constant, parse_float=_float)
    except BadBody:
        raise
    except RecursionError:
        raise BadBody(f"body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise BadBody(f"body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise BadBody(f"body is a JSON {type(payload).__name__}, not an object")
    check_storable(payload)
    if not isinstance(payload.get("event"), str) or not payload["event"].strip():
        raise BadBody("no event: the body has no text field 'event'")
    return payload


def check_storable(value: Any) -> None:
    """Walk the value (without recursion): too deep, a NUL or a lone surrogate raise :class:`BadBody`."""
    stack: list[tuple[Any, str, int]] = [(value, "body", 1)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadBody(f"body is nested more than {MAX_DEPTH} levels deep (at {where[:100]})")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, f"a key in {where}")
                stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            _check_text(item, where)


def _check_text(text: str, where: str) -> None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return
    what = "a NUL character" if found.group() == "\x00" else "an unpaired UTF-16 surrogate"
    place = where.encode("ascii", "backslashreplace").decode()[:100]
    raise BadBody(f"{place} contains {what} (\\u{ord(found.group()):04x}), which cannot be stored")
