"""What the fabric sandbox stores: API clients, members, transactions (earns and their reversals), programs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .accounting import MerchantCounters


@dataclass
class Client:
    secret: str = field(repr=False)
    merchant: str
    active: bool = True


@dataclass
class Member:
    profile_id: str
    loyalty_number: str
    phone: str
    first_name: str
    last_name: str
    email: str
    points: int = 0


@dataclass
class Transaction:
    code: str
    number: str
    merchant: str
    type: str  # EARN or EARN_REVERSE
    reference: str
    profile_id: str
    activity_timestamp: str
    created_at: datetime
    points: int
    gross: Decimal
    paid: Decimal
    tax: Decimal
    net: Decimal
    discount: Decimal
    status: str  # ACTIVE or PENDING
    data: dict[str, Any]
    reverses: str = ""  # EARN_REVERSE: the reference of the earn it reverses
    reversed_points: int = 0  # EARN: points taken back by reversals so far


class FabricMerchant(MerchantCounters):
    """A fabric tenant/program, reached by one or more API clients."""

    def clear(self) -> None:
        super().clear()
        self.earns: dict[str, list[Transaction]] = {}  # transactionExternalReference -> every EARN, oldest first
        self.transactions: list[Transaction] = []  # every transaction, earns and reversals
        self.lookups = 0
        self.member_lookups = 0
        self.reverse_calls = 0
        self.unauthorized = 0
        self.token_requests = 0
        self.tokens_issued = 0
        self.token_refusals = 0
