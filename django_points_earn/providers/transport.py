"""One HTTP answer, read safely: per-thread sessions, a body bounded in time and size, and what a failure means.

Every platform call goes through :meth:`~django_points_earn.providers.base.BaseBackend.send`, which uses these; a
backend that makes a call of its own (fabric's token grant) uses them directly.
"""

from __future__ import annotations

import math
import os
import socket
import threading

import requests

from .. import __version__
from .scrubbing import scrub
from .watchdog import WATCHDOG

MAX_BODY_BYTES = 5 * 2**20  # an answer larger than this is not an answer we can use


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds, or ``None`` if absent or unusable (an HTTP date, ``inf``, ``nan``, text).
    Negative values count as 0; the lifecycle clamps every delay within RETRY's MIN_DELAY and MAX_DELAY."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


_sessions = threading.local()


def close_sessions() -> None:
    """Close this thread's sessions: a worker's parent must not hand pooled sockets down to forked jobs."""
    for session in (getattr(_sessions, "by_account", None) or {}).values():
        session.close()
    _sessions.by_account = {}


def _read_environment_once(session: requests.Session, base_url: str) -> None:
    """Honour the proxy and CA-bundle variables as requests would, but read them once per session.

    With ``trust_env`` on, requests re-reads the whole environment (and looks for ``~/.netrc``) on every call:
    measurable on an account's critical path, where calls run back to back. ``.netrc`` is not consulted: every
    platform here authenticates with its own key or token.
    """
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle


def account_session(account_name: str, base_url: str) -> requests.Session:
    """One Session per account and thread: connection reuse without sharing a Session across threads."""
    cache = getattr(_sessions, "by_account", None)
    if cache is None:
        cache = _sessions.by_account = {}
    session = cache.get(account_name)
    if session is None:
        session = requests.Session()
        session.headers.update(
            {
                "Accept": "application/json",
                "User-Agent": f"django-points-earn/{__version__}",
            }
        )
        _read_environment_once(session, base_url)
        cache[account_name] = session
    return session


class AnswerTooSlow(requests.exceptions.ReadTimeout):
    """The answer kept coming, a little at a time, past the whole-call deadline."""


class AnswerTooLarge(requests.exceptions.ContentDecodingError):
    """The answer was larger than MAX_BODY_BYTES."""


def read_bounded(response: requests.Response, *, deadline: float) -> None:
    """Read the body, at most MAX_BODY_BYTES, and only until ``deadline``.

    A blocking read of a trickling body returns only when a whole chunk has arrived, so the deadline is enforced by
    the process's watchdog thread, which shuts the socket down from outside; the blocked read then fails and is
    reported as too slow.
    """
    expired = threading.Event()

    def abort() -> None:
        expired.set()
        connection = getattr(response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = WATCHDOG.at(deadline, abort)  # one thread for every call's deadline, not a thread per call
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(chunk_size=65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise AnswerTooLarge(f"answer larger than {MAX_BODY_BYTES // 2**20} MB; stopped reading")
    except requests.RequestException:
        if expired.is_set():
            raise AnswerTooSlow("the answer was still arriving after the whole-call timeout; stopped reading") from None
        raise
    finally:
        timer.cancel()
        response.close()
    if expired.is_set():
        raise AnswerTooSlow("the answer was still arriving after the whole-call timeout; stopped reading")
    response._content = b"".join(chunks)  # what .content/.text/.json() read from now on
    response._content_consumed = True


def describe_exception(exc: BaseException) -> tuple[str, bool]:
    """A short message for a transport failure, and whether the platform may have received the request."""
    if isinstance(exc, AnswerTooSlow | AnswerTooLarge):
        return str(exc) + " (the platform may have acted)", True
    if isinstance(exc, requests.ConnectTimeout):
        return f"could not connect in time: {scrub(str(exc))}", False
    if isinstance(exc, requests.ReadTimeout):
        return "no answer within the read timeout (the platform may have acted)", True
    if isinstance(exc, requests.ConnectionError):
        text = scrub(str(exc))
        refused = "Connection refused" in text or "NewConnectionError" in text or "Name or service" in text
        if refused:
            return f"could not connect: {text}", False
        return f"connection broken: {text}", True
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return f"answer cut off: {scrub(str(exc))}", True
    return f"{type(exc).__name__}: {scrub(str(exc))}", True
