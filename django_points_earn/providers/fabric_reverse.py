"""The ``/v2/earn/reverse`` body: the earn's amounts, scaled to the refunded share and negated, identities kept.

A full refund negates the earn's header amounts. A partial one scales gross, tax and discount by
``amount / total`` (rounded to 2 places) and derives paid and net from them, so that paid = gross - discount and
net = gross - tax - discount hold exactly, as on the earn. The reversal has its own, stable reference, so that
``checkForDuplicateTransaction`` makes a resend harmless and get-transaction can find it after a lost answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..adapters import CENTS
from ..conf import AccountConfig


def reference(order_number: str, refund_id: str) -> str:
    return f"{order_number}-R-{refund_id}"[:100]


def build(
    earn: dict[str, Any],
    *,
    account: AccountConfig,
    amount: Decimal | None,
    total: Decimal | None,
    refund_id: str,
    reason: str,
) -> dict[str, Any]:
    def dec(key: str) -> Decimal:
        return Decimal(str(earn.get(key) or 0))

    gross, tax, discount = dec("transactionGrossAmount"), dec("totalTax"), dec("discountValue")
    if amount is not None and total:
        share = min(Decimal(1), amount / total)
        gross, tax, discount = ((v * share).quantize(CENTS) for v in (gross, tax, discount))
    paid, net = gross - discount, gross - tax - discount
    entity = account.option("REVERSE_ENTITY_REFERENCE") or account.option("ENTITY_REFERENCE") or ""
    return {
        "profileId": earn.get("profileId"),
        "entityReference": str(entity)[:15],
        "reverseTransactionExternalRef": earn.get("transactionExternalReference"),
        "transactionTypeExternalReference": str(account.option("REVERSE_TRANSACTION_TYPE") or "RETURN")[:15],
        "activityTimestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "transactionExternalReference": reference(str(earn.get("transactionExternalReference") or ""), refund_id),
        "checkForDuplicateTransaction": 1,
        "fetchUpdatedMemberPointTotals": 0,
        "transactionGrossAmount": float(-gross),
        "discountValue": float(-discount),
        "totalAmountPaid": float(-paid),
        "totalTax": float(-tax),
        "netAmount": float(-net),
        "reasonDescription": reason[:200],
    }
