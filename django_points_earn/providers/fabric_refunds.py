"""Refunds on fabric: ``POST /v2/earn/reverse``, its body (:mod:`.fabric_reverse`) and what may be sent.

fabric documents the call as cancelling every point of the earn: a partial refund is sent only when the account
says fabric confirmed partial reversals, and a reversal that took back every point reverses the earning. After a
lost answer, get-transaction is asked first: a reversal is never sent twice.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from ..conf import setting_path
from . import fabric_reverse
from .base import AWARDED, DUPLICATE, FULLY_REVERSED, REJECTED, EarnResult, PlatformError
from .fabric_answers import answer_fields, as_decimal
from .fabric_http import REVERSE, token_failure
from .fabric_members import FabricMembers
from .fabric_token import TokenUnavailable
from .fabric_transactions import FabricTransactions


class FabricRefunds(FabricMembers, FabricTransactions):
    """The refund half of the fabric backend (``supports_refunds``): snapshot, body, call."""

    def refund_body(self, record: Any, reversal: Any, amount: Any = None) -> dict[str, Any]:
        """``amount``: what this refund takes back (``reversals.amount_to_take``: for "the rest", the total less
        the earning's other refunds), never the refund's own empty amount, which would mean the whole order."""
        earn = {**(record.payload or {})}
        if not earn.get("profileId"):  # looked up by snapshot() before the first attempt
            earn["profileId"] = (reversal.remote_before or {}).get("profileId")
        return fabric_reverse.build(
            earn,
            account=self.account,
            amount=amount if amount is not None else reversal.amount,
            total=record.total,
            refund_id=reversal.refund_id,
            reason=reversal.reason or "refund",
        )

    def partial_reversal_refusal(self, amount: Decimal, total: Decimal) -> str:
        """fabric documents /v2/earn/reverse as cancelling all points of the earn: a part is sent only when the
        account says fabric confirmed partial reversals (``PARTIAL_REVERSALS = "pro_rata"``)."""
        if self.account.option("PARTIAL_REVERSALS") == "pro_rata":
            return ""
        setting = setting_path("ACCOUNTS", self.account.name, "PARTIAL_REVERSALS")
        return (
            f"partial refund of {amount} out of {total} not sent: fabric's /v2/earn/reverse takes back every point "
            f"of the earn. Take this refund's points back in fabric by hand and mark it resolved, or set {setting} "
            f'to "pro_rata" once fabric has confirmed that partial reversals work'
        )

    def snapshot(self, record: Any) -> dict[str, Any]:
        """Read before the first reversal attempt: the member's profileId, when the record does not hold it (an
        earn recorded before it was kept). Otherwise nothing: the reversal's own reference is what a later lookup
        searches for. Raises :class:`PlatformError` when the member cannot be found now (retried)."""
        if (record.payload or {}).get("profileId"):
            return {}
        profile = self._profile_for(record, request_id="")
        if isinstance(profile, EarnResult):
            raise PlatformError(f"the earn's fabric member is unknown and {profile.message}", http_status=None)
        return {"profileId": profile}

    def _partial_refusal(self, record: Any, body: dict[str, Any]) -> str:
        """Why this reversal is not sent: settings fabric would refuse, or a partial one not switched on."""
        if problems := fabric_reverse.identity_errors(self.account.name, self.account.options):
            return "reversal not sent: " + " ".join(problems)
        earned = as_decimal((getattr(record, "payload", None) or {}).get("totalAmountPaid"))
        asked = as_decimal(body.get("totalAmountPaid"))
        if earned is None or asked is None or abs(asked) >= earned:
            return ""
        return self.partial_reversal_refusal(abs(asked), earned)

    def reverse(
        self,
        record: Any,
        body: dict[str, Any],
        *,
        request_id: str,
        before: dict[str, Any] | None,
        outcome_unknown: bool = False,
    ) -> EarnResult:
        """``POST /v2/earn/reverse``; after a lost answer, get-transaction first: a reversal is never sent twice."""
        started = time.monotonic()
        try:
            result = self._reverse(body, request_id, outcome_unknown, record)
        except TokenUnavailable as exc:
            result = token_failure(exc)
        if result.status == AWARDED:
            _mark_if_everything_taken(record, result)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        return result

    def _reverse(self, body: dict[str, Any], request_id: str, outcome_unknown: bool, record: Any = None) -> EarnResult:
        reference = str(body["transactionExternalReference"])
        if outcome_unknown:
            found = self._find_reversal(reference, request_id)
            if found is not None:
                return found
        if refusal := self._partial_refusal(record, body):
            # e.g. a refused partial refund sent again by hand, or one queued before the setting changed
            return EarnResult(REJECTED, refusal)
        if not body.get("profileId"):
            # Never a reversal with profileId null: find the member first (fabric requires the field).
            profile = self._profile_for(record, request_id)
            if isinstance(profile, EarnResult):
                profile.message = f"the earn's fabric member is unknown and {profile.message}; not sent"
                return profile
            body["profileId"] = profile
        response, exc = self._call("POST", REVERSE, json_body=body, request_id=request_id)
        result = self.classify_earn(response, exc)
        if result.status == DUPLICATE:
            found = self._find_reversal(reference, request_id)
            return (
                found
                if found is not None
                else EarnResult(
                    REJECTED,
                    f"fabric calls reversal {reference} a duplicate but cannot find it",
                    **answer_fields(result),
                )
            )
        if result.status == AWARDED and result.points is not None:
            result.points = abs(result.points)
        return result


def _mark_if_everything_taken(record: Any, result: EarnResult) -> None:
    """Never record less than fabric took: a reversal (of any share) that took back every point the earn has left
    reverses the earning (``FULLY_REVERSED``), as fabric documents the call (it cancels all points of the earn)."""
    earned = getattr(record, "points", None)
    if earned is None or result.points is None or not hasattr(record, "reversal_set"):
        return
    before = record.reversal_set.filter(status="reversed").aggregate(s=Sum("points"))["s"] or Decimal(0)
    if before + result.points >= Decimal(earned):
        result.remote_status = FULLY_REVERSED
        result.message = (
            f"{result.message + '; ' if result.message else ''}fabric took back every point of the earn "
            f"({before + result.points} of {earned}): the earning is reversed"
        )
