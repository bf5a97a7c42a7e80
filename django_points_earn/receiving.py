"""What the signal receivers (an order paid, a review approved) share: calling the shop's adapter without ever
letting it raise into checkout, and reading a phone and an account's platform for the record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from .conf import get_settings
from .phones import InvalidPhone, normalize_ksa_mobile


def call_safely(fn: Callable[[Any], Any], obj: Any) -> Any:
    """``fn(obj)``, or ``None`` if the shop's code raised (the receiver records what it can, and says why)."""
    try:
        return fn(obj)
    except Exception:
        return None


def normalized_or_raw(phone: Any) -> str:
    """The phone in the platform's form, or as typed when it is not a Saudi mobile (the record says why)."""
    if phone is None:
        return ""
    try:
        return normalize_ksa_mobile(phone)
    except InvalidPhone:
        return str(phone)


def provider_of(account: str) -> str:
    """The account's platform, or "" for an account not (or no longer) configured."""
    try:
        return get_settings().account(account).provider
    except ImproperlyConfigured:
        return ""


def drain_after_commit(account: str) -> None:
    """Ask for the account's drain job once the shop's transaction commits; a rollback asks for nothing, and a
    Redis that cannot be reached is left to the sweep (never raised into the shop)."""
    from .queueing import request_drain_safely

    transaction.on_commit(lambda: request_drain_safely(account), robust=True)
