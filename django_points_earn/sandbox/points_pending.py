"""The Points sandbox's pending customers: phones whose Points account is not activated yet, whose earnings wait
(the pending-customer answer of §2.4) until the customer activates or the configured delay approves them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .points_resources import order_resource
from .points_rules import normalize_phone
from .points_state import PointsMerchant


class PointsPending:
    """Mixed into :class:`~django_points_earn.sandbox.points.PointsSandbox`, which holds the state named below
    and provides ``_clock()`` and ``_award()`` (an approved order, its points credited)."""

    _state: threading.RLock
    _merchants: dict[str, PointsMerchant]
    pending_phones: set[str]
    approve_pending_after: float | None

    _clock: Callable[[], datetime]
    _award: Callable[..., Any]

    def mark_pending(self, phone: str) -> None:
        """Treat ``phone`` (any accepted form) as a customer whose Points account is not activated yet."""
        normal = normalize_phone(str(phone).strip())
        if normal is None:
            raise ValueError(f"not a Saudi mobile number: {phone!r}")
        with self._state:
            self.pending_phones.add(normal)

    def activate(self, phone: str) -> list[dict[str, Any]]:
        """The customer behind ``phone`` activates their account: every pending earning becomes an approved
        order (new uuid, points credited, an ``approved`` event). Returns those orders as OrderResource dicts.
        """
        normal = normalize_phone(str(phone).strip())
        if normal is None:
            raise ValueError(f"not a Saudi mobile number: {phone!r}")
        activated = []
        with self._state:
            self.pending_phones.discard(normal)
            now = self._clock()
            for m in self._merchants.values():
                for p in [p for p in m.pending if p.phone_number == normal]:
                    m.pending.remove(p)
                    activated.append(order_resource(self._award(m, p.data, p.total_points, now), now))
        return activated

    def approve_due_pending(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Approve every pending earning older than ``approve_pending_after`` seconds, as if its customer had
        activated (an approved order with a uuid, an ``approved`` event). The phone itself stays pending, so its
        next earning waits as long. Returns the approved orders as OrderResource dicts."""
        if self.approve_pending_after is None:
            return []
        now = now or self._clock()
        cutoff = now - timedelta(seconds=float(self.approve_pending_after))
        approved = []
        with self._state:
            for m in self._merchants.values():
                for p in [p for p in m.pending if p.created_at <= cutoff]:
                    m.pending.remove(p)
                    approved.append(order_resource(self._award(m, p.data, p.total_points, now), now))
        return approved

    def approve_all_pending(self) -> list[dict[str, Any]]:
        """Approve every pending earning now, whatever its age (``points_sandbox --approve-pending``)."""
        approved = []
        with self._state:
            now = self._clock()
            for m in self._merchants.values():
                for p in list(m.pending):
                    m.pending.remove(p)
                    approved.append(order_resource(self._award(m, p.data, p.total_points, now), now))
        return approved
