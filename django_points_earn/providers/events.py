"""What a platform's webhook says, in the package's words: a provider's webhook parser turns one stored delivery
into these, and the core (``webhooks.py``) applies them through the modules that own the state.

Like django-anymail's tracking events: the parser knows the platform's event names, fields and number formats;
the events know none of them, and the core knows nothing else. Every event is frozen data: no database, no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class EarningConfirmed:
    """The platform holds this order as credited. ``remote_id`` is its id there ("" when the delivery gave none);
    ``points`` what it credited, when the delivery says so reliably (else None)."""

    order_number: str
    remote_id: str
    remote_reference: str = ""
    points: Decimal | None = None


@dataclass(frozen=True)
class EarningCancelled:
    """The order was cancelled on the platform: every point of the earning is taken back."""

    order_number: str
    remote_id: str
    reason: str = ""


@dataclass(frozen=True)
class PointsTakenBack:
    """A refund on the platform took points back: ours (the backend tells by ``reason``, see
    ``BaseBackend.is_our_refund``) or one made in the platform's dashboard. ``fully``: the platform says every
    point of the earning is back, whatever share was refunded."""

    order_number: str
    remote_id: str
    amount: Decimal | None = None
    points: Decimal | None = None
    reason: str = ""
    remote_status: str = ""
    fully: bool = False


@dataclass(frozen=True)
class MerchantBalance:
    """The merchant's own balance on the platform is running out (``kind`` "low_balance_warning") or past the debt
    it may run up ("debt_exceeded"): about the account, not one earning. Amounts are None when the delivery does
    not give them reliably; ``at`` is the platform's timestamp as sent ("" when none)."""

    kind: str
    current_balance: Decimal | None = None
    order_points: Decimal | None = None
    balance_after_order: Decimal | None = None
    max_debt_allowed: Decimal | None = None
    merchant_id: str = ""
    merchant_name: str = ""
    at: str = ""


@dataclass(frozen=True)
class Ignored:
    """Nothing here is about an earning; ``why`` is kept on the delivery."""

    why: str


Event = EarningConfirmed | EarningCancelled | PointsTakenBack | MerchantBalance | Ignored


@dataclass(frozen=True)
class ParsedDelivery:
    """One delivery, read by its platform's parser: what the delivery is stored and found by (the order's
    number and platform id, shown in the admin), what tells a redelivery from a new delivery about the same order
    (``key``: the fields that differ, e.g. two partial refunds' amounts), and what it says (``events``, applied in
    order)."""

    order_number: str = ""
    remote_id: str = ""
    key: tuple[str, ...] = ()
    events: tuple[Event, ...] = field(default_factory=tuple)
