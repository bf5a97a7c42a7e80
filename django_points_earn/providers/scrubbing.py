"""Secrets never reach a log, a record or the admin: every stored or shown text of a platform answer goes through
:func:`scrub`, and is :func:`cut` to a size worth keeping.
"""

from __future__ import annotations

import threading
from collections import deque

from ..conf import all_secret_values

MAX_STORED_BODY = 20_000  # characters of a platform answer kept on the attempt

# Secrets that exist only at run time (fabric's bearer tokens): scrubbed like the configured ones. Bounded, since
# a long-running worker fetches a new token every few minutes.
_runtime_secrets: deque[str] = deque(maxlen=64)
_runtime_lock = threading.Lock()


def remember_secret(value: str) -> None:
    """Scrub ``value`` (e.g. an access token) from every text that goes through :func:`scrub` from now on."""
    if value and len(value) >= 8:
        with _runtime_lock:
            if value not in _runtime_secrets:
                _runtime_secrets.append(value)


def scrub(text: str) -> str:
    """Remove any configured secret or live token from text that may reach a log, a record or the admin."""
    with _runtime_lock:
        runtime = list(_runtime_secrets)
    for secret in [*all_secret_values(), *runtime]:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def cut(text: str, limit: int = MAX_STORED_BODY) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"
