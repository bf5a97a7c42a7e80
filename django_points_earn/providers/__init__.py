"""Platform clients. ``get_backend(account)`` picks the one for an account's ``PROVIDER``."""

from __future__ import annotations

from ..conf import AccountConfig
from .base import BaseBackend


def get_backend(account: AccountConfig) -> BaseBackend:
    if account.provider == "points":
        from .points import PointsBackend

        return PointsBackend(account)
    if account.provider == "fabric":
        from .fabric import FabricBackend

        return FabricBackend(account)
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"No backend for provider {account.provider!r} (account {account.name!r}).")
