"""The ``/v2/earn/reverse`` body: the earn's amounts, scaled to the refunded share and negated, identities kept.

A full refund negates the earn's header amounts. A partial one scales gross, tax and discount by
``amount / total`` (rounded to 2 places) and derives paid and net from them, so that paid = gross - discount and
net = gross - tax - discount hold exactly, as on the earn. The entity and transaction type are never cut to fit:
:func:`identity_errors` names the setting to change (``manage.py check``; the reversal is refused before any call).
The reversal has its own, stable reference, so that ``checkForDuplicateTransaction`` makes a resend harmless and
get-transaction can find it after a lost answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..conf import AccountConfig, setting_path
from ..earning_request import CENTS

# /v2/earn/reverse takes entityReference and transactionTypeExternalReference of 3 to 15 characters (the earn
# takes 1 to 100): "Company LIBERTY CENTER", the docs' own earn entity, does not fit.
REVERSE_LENGTHS = (3, 15)


def reverse_identities(options: dict[str, Any]) -> tuple[str, str]:
    """The reversal's entityReference (REVERSE_ENTITY_REFERENCE, else ENTITY_REFERENCE) and transaction type."""
    entity = options.get("REVERSE_ENTITY_REFERENCE") or options.get("ENTITY_REFERENCE") or ""
    return str(entity), str(options.get("REVERSE_TRANSACTION_TYPE") or "RETURN")


def identity_errors(name: str, options: dict[str, Any]) -> list[str]:
    """What keeps this account's reversals from fabric (each naming the setting to change), or []."""
    low, high = REVERSE_LENGTHS
    entity, kind = reverse_identities(options)
    errors = []
    if not low <= len(entity) <= high:
        if options.get("REVERSE_ENTITY_REFERENCE"):
            errors.append(
                f"{setting_path('ACCOUNTS', name, 'REVERSE_ENTITY_REFERENCE')} is {entity!r} ({len(entity)} "
                f"characters); fabric's /v2/earn/reverse takes {low} to {high}."
            )
        else:
            errors.append(
                f"{setting_path('ACCOUNTS', name, 'ENTITY_REFERENCE')} is {entity!r} ({len(entity)} characters) and "
                f"is also the reversal's entityReference, where fabric's /v2/earn/reverse takes {low} to {high}: "
                f"set {setting_path('ACCOUNTS', name, 'REVERSE_ENTITY_REFERENCE')} to the entity fabric uses for "
                "returns."
            )
    if not low <= len(kind) <= high:
        errors.append(
            f"{setting_path('ACCOUNTS', name, 'REVERSE_TRANSACTION_TYPE')} is {kind!r} ({len(kind)} characters); "
            f"fabric's /v2/earn/reverse takes {low} to {high}."
        )
    return errors


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
    entity, kind = reverse_identities(account.options)
    return {
        "profileId": earn.get("profileId"),
        "entityReference": entity,  # never cut: lengths are checked (manage.py check, and before sending)
        "reverseTransactionExternalRef": earn.get("transactionExternalReference"),
        "transactionTypeExternalReference": kind,
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
