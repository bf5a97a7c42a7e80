"""How the fabric sandbox shows what it stores: a transaction, a member, and a program's ledger."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from .fabric_state import FabricMerchant, Member, Transaction


def json_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def iso(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")  # fabric's shape: no zone, UTC


def txn_resource(t: Transaction) -> dict[str, Any]:
    stamp = datetime.strptime(t.activity_timestamp, "%Y-%m-%d %H:%M:%S")
    return {
        "transactionCode": t.code,
        "transactionType": t.type,
        "transactionExternalReference": t.reference,
        "transactionNumber": t.number,
        "profileId": t.profile_id,
        "status": t.status,
        "transactionDateTime": iso(t.created_at),
        "activityTimestamp": iso(stamp),
        "transactionGrossAmount": json_number(t.gross),
        "totalAmountPaid": json_number(t.paid),
        "totalTax": json_number(t.tax),
        "transactionNetAmount": json_number(t.net),
        "discountValue": json_number(t.discount),
        "points": t.points,
        "basePoints": t.points,
        "bonusPoints": 0,
        "promotionalPoints": 0,
        "reverseTransactionExternalRef": t.reverses or None,
        "discounts": t.data.get("discounts") or [],
        "transactionItems": t.data.get("transactionItems") or [],
    }


def member_resource(member: Member) -> dict[str, Any]:
    account = {
        "profileId": member.profile_id,
        "loyaltyNumber": member.loyalty_number,
        "accountStatus": "Enabled",
        "enrollmentStatus": True,
        "tierExternalReference": "GLD",
    }
    return {
        "profileId": member.profile_id,
        "loyaltyNumber": member.loyalty_number,
        "firstName": member.first_name,
        "lastName": member.last_name,
        "emailAddress": member.email,
        "phoneNumber": member.phone,
        "accounts": [account],
    }


def merchant_ledger(m: FabricMerchant) -> dict[str, Any]:
    orders = {}
    for reference, earns in m.earns.items():
        first = earns[0]
        reversed_points = sum(t.reversed_points for t in earns)
        orders[reference] = {
            "awards": len(earns),
            "transactionCode": first.code,
            "transactionCodes": [t.code for t in earns],
            "profileId": first.profile_id,
            "points": first.points,
            "points_awarded": sum(t.points for t in earns),
            "reversed_points": reversed_points,
            "status": "REVERSED"
            if reversed_points and reversed_points >= first.points
            else "PARTIALLY_REVERSED"
            if reversed_points
            else first.status,
            "gross": float(first.gross),
            "paid": float(first.paid),
            "net": float(first.net),
            "tax": float(first.tax),
        }
    reversals = [t for t in m.transactions if t.type == "EARN_REVERSE"]
    return {
        "calls": m.calls,
        "overlaps": m.overlaps,
        "max_concurrency": m.max_concurrency,
        "in_flight": m.in_flight,
        "responses": dict(m.responses),
        "faults": dict(m.faults),
        "awards": sum(len(earns) for earns in m.earns.values()),
        "points_awarded": sum(t.points for earns in m.earns.values() for t in earns),
        "points_reversed": -sum(t.points for t in reversals),
        "lookups": m.lookups,
        "member_lookups": m.member_lookups,
        "reverse_calls": m.reverse_calls,
        "unauthorized": m.unauthorized,
        "token_requests": m.token_requests,
        "tokens_issued": m.tokens_issued,
        "token_refusals": m.token_refusals,
        "orders": orders,
        "reversals": [
            {"reference": t.reference, "reverses": t.reverses, "transactionCode": t.code, "points": t.points}
            for t in reversals
        ],
    }
