"""The fabric sandbox's earning: ``POST /v2/earn`` (validation, faults, duplicates, points) and
``POST /v2/earn/reverse`` (all of an earn, or part of it pro rata)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .accounting import counted_call
from .fabric_resources import txn_resource
from .fabric_rules import envelope, parse_object, validate_earn, validate_reverse
from .fabric_state import FabricMerchant, Member, Transaction
from .response import SandboxResponse, bad_gateway, connection_reset

DUPLICATE_MODES = ("400", "409", "422", "accept")
VALIDATION_STATUSES = (400, 422)
DISCOUNT_VALUE_MODES = ("integer", "number")
DUPLICATE_MESSAGE = "Duplicate transaction: transactionExternalReference already exists."


class FabricEarn:
    """Mixed into :class:`~django_points_earn.sandbox.fabric.FabricSandbox`, which holds the state named below
    and provides ``_play()`` (fault injection) and ``_new_uuid()``."""

    _state: threading.RLock
    _members: dict[str, Member]
    _next_txn: int
    validation_status: int
    duplicate_mode: str
    discount_value_as: str
    points_per_unit: Decimal
    partial_reversals: bool

    _play: Callable[..., SandboxResponse]
    _new_uuid: Callable[[], str]

    # -- POST /v2/earn ------------------------------------------------------------------------------------

    def _earn(self, m: FabricMerchant, query: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        # fabric does not refuse overlapping calls; the ledger still counts them
        return counted_call(self._state, m, lambda: self._earn_call(m, body, simulate_slow), concurrent_is_overlap=True)

    def _earn_call(self, m: FabricMerchant, body: bytes, simulate_slow: bool) -> SandboxResponse:
        data, bad = parse_object(body)
        if bad is not None:
            return bad
        errors, clean = validate_earn(data, self.discount_value_as)
        with self._state:
            if not errors and clean["profileId"] not in self._members:
                errors["profileId"] = ["Member not found."]
        if errors:
            return self._invalid(errors)
        return self._play(m, lambda: self._record(m, clean, "EARN"), simulate_slow)

    def _record(
        self, m: FabricMerchant, clean: dict[str, Any], kind: str, original: Transaction | None = None
    ) -> SandboxResponse:
        reference = clean["transactionExternalReference"]
        with self._state:
            taken = any(t.reference == reference for t in m.transactions)
            if taken and clean["checkForDuplicateTransaction"] == 1 and self.duplicate_mode != "accept":
                status = int(self.duplicate_mode)
                return envelope(status, DUPLICATE_MESSAGE, {"transactionExternalReference": [DUPLICATE_MESSAGE]})
            if original is not None:
                points = self._reversal_points(original, clean)
                if points is None:
                    return self._invalid({"reverseTransactionExternalRef": ["This earn is already fully reversed."]})
            else:
                points = int((clean["netAmount"] * self.points_per_unit).quantize(Decimal(1), ROUND_HALF_UP))
            txn = Transaction(
                code=self._new_uuid(),
                number=f"LOYALTY-{self._next_txn:06d}",
                merchant=m.name,
                type=kind,
                reference=reference,
                profile_id=clean["profileId"],
                activity_timestamp=clean["activityTimestamp"],
                created_at=datetime.now(UTC),
                points=points,
                gross=clean["transactionGrossAmount"],
                paid=clean["totalAmountPaid"],
                tax=clean["totalTax"],
                net=clean["netAmount"],
                discount=clean["discountValue"],
                status="PENDING" if clean.get("setToPending") else "ACTIVE",
                data=clean["raw"],
                reverses=original.reference if original is not None else "",
            )
            self._next_txn += 1
            m.transactions.append(txn)
            if original is None:
                m.earns.setdefault(reference, []).append(txn)
            else:
                original.reversed_points -= points  # points is negative
            member = self._members[txn.profile_id]
            member.points += points
            resource = txn_resource(txn)
            if clean["fetchUpdatedMemberPointTotals"] == 1:
                resource["currentPointsBalance"] = member.points
            message = "earned" if original is None else "earn reversed"
        return envelope(201, message, data=resource)

    # -- POST /v2/earn/reverse ----------------------------------------------------------------------------

    def _reverse(self, m: FabricMerchant, query: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        with self._state:
            m.reverse_calls += 1
        data, bad = parse_object(body)
        if bad is not None:
            return bad
        errors, clean = validate_reverse(data)
        if errors:
            return self._invalid(errors)
        with self._state:
            originals = [
                t for t in m.earns.get(clean["reverseTransactionExternalRef"], []) if t.profile_id == clean["profileId"]
            ]
            if not originals:
                return self._invalid({"reverseTransactionExternalRef": ["No earn transaction with this reference."]})
            return self._record(m, clean, "EARN_REVERSE", original=originals[0])

    def _reversal_points(self, original: Transaction, clean: dict[str, Any]) -> int | None:
        """Negative points to take back, or None when nothing is left (the docs: a reversal cancels it all)."""
        left = original.points - original.reversed_points
        if left <= 0 or (original.reversed_points and not self.partial_reversals):
            return None
        if not self.partial_reversals or original.net <= 0:
            return -left
        share = Decimal(original.points) * abs(clean["netAmount"]) / original.net
        return -min(left, int(share.quantize(Decimal(1), ROUND_HALF_UP)))

    def _invalid(self, errors: dict[str, list[str]]) -> SandboxResponse:
        return envelope(self.validation_status, next(iter(errors.values()))[0], errors)

    def _fault_answer(self, kind: str) -> SandboxResponse:
        if kind == "429":
            return envelope(429, "Too Many Requests")
        if kind == "html":
            return bad_gateway()
        if kind == "reset":
            return connection_reset()
        return envelope(500, "Internal Server Error")

    def _server_error(self) -> SandboxResponse:
        return envelope(500, "Internal Server Error")
