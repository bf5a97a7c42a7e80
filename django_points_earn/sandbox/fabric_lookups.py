"""The fabric sandbox's lookups: members (enrolled here, found by ``GET /v1/members``), transactions
(``GET /v2/earn/get-transaction``), and the quirks that answer either another way."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from .fabric_resources import member_resource, txn_resource
from .fabric_rules import envelope, paging
from .fabric_state import FabricMerchant, Member
from .response import SandboxResponse

# How get-transaction answers: "exact" (its filters applied, as documented); "unfiltered" (every transaction of the
# program, whatever the query asked); "unfiltered-bare" (the same, the items without transactionExternalReference
# and transactionCode): a server a client must not believe blindly.
TRANSACTION_ANSWERS = ("exact", "unfiltered", "unfiltered-bare")
# How Get Members answers a phone search: "documented" ({data: [members]}), or "unrecognised" (a shape the client
# does not know: {data: {content: [...], totalElements: n}} whose members carry no profileId).
MEMBER_ANSWERS = ("documented", "unrecognised")
TRANSACTION_TYPES = (
    "EARN",
    "BURN",
    "EXPIRY",
    "EARN_REVERSE",
    "BURN_REVERSE",
    "ADJUSTMENT",
    "DEDUCT",
    "TRANSFER",
    "MERGE",
    "FORFEITED",
    "CONVERT",
    "UNMERGE",
)


class FabricLookups:
    """Mixed into :class:`~django_points_earn.sandbox.fabric.FabricSandbox`, which holds the state named below
    and provides ``_new_uuid()``."""

    _state: threading.RLock
    _members: dict[str, Member]
    transactions_answer: str
    members_answer: str

    _new_uuid: Callable[[], str]

    # -- members and quirks -------------------------------------------------------------------------------

    def set_quirks(self, *, transactions: str | None = None, members: str | None = None) -> None:
        """Answer get-transaction (:data:`TRANSACTION_ANSWERS`) or Get Members (:data:`MEMBER_ANSWERS`) another way."""
        if transactions is not None and transactions not in TRANSACTION_ANSWERS:
            raise ValueError(f"transactions must be one of {', '.join(TRANSACTION_ANSWERS)}, not {transactions!r}")
        if members is not None and members not in MEMBER_ANSWERS:
            raise ValueError(f"members must be one of {', '.join(MEMBER_ANSWERS)}, not {members!r}")
        with self._state:
            self.transactions_answer = transactions or self.transactions_answer
            self.members_answer = members or self.members_answer

    def add_member(
        self,
        phone: str,
        *,
        profile_id: str | None = None,
        first_name: str = "Sandbox",
        last_name: str = "Member",
        email: str | None = None,
    ) -> str:
        """Enrol a member with ``phone`` (digits only, as fabric stores it); returns the profileId."""
        phone = str(phone)
        if not re.fullmatch(r"[0-9]{1,16}", phone):
            raise ValueError("a member's phone is 1 to 16 digits, no spaces or signs")
        with self._state:
            profile_id = profile_id or self._new_uuid()
            number = str(10_000_000_000 + len(self._members) + 1)
            self._members[profile_id] = Member(
                profile_id, number, phone, first_name, last_name, email or f"member{number}@example.com"
            )
            return profile_id

    # -- GET /v2/earn/get-transaction and GET /v1/members -------------------------------------------------

    def _get_transactions(
        self, m: FabricMerchant, query: dict[str, str], body: bytes, simulate_slow: bool
    ) -> SandboxResponse:
        with self._state:
            m.lookups += 1
        errors: dict[str, list[str]] = {}
        offset, limit = paging(query, errors)
        kind = query.get("transactionType")
        if kind is not None and kind not in TRANSACTION_TYPES:
            errors["transactionType"] = [f'"{kind}" is not a valid choice.']
        if errors:
            return envelope(400, "Bad Request", errors)
        filters = {
            "reference": query.get("transactionExternalReference"),
            "code": query.get("transactionCode"),
            "profile_id": query.get("profileId"),
            "type": kind,
        }
        start, end = query.get("startTimestampUTC"), query.get("endTimestampUTC")
        with self._state:
            quirk = self.transactions_answer
            found = [
                t
                for t in m.transactions
                if quirk != "exact"
                or (
                    all(v is None or getattr(t, k) == v for k, v in filters.items())
                    and (start is None or t.activity_timestamp >= start)
                    and (end is None or t.activity_timestamp <= end)
                )
            ]
            page = [txn_resource(t) for t in found[offset : offset + limit]]
        if quirk == "unfiltered-bare":
            for item in page:
                del item["transactionExternalReference"], item["transactionCode"]
        return envelope(200, "Success", data=page)

    def _get_members(
        self, m: FabricMerchant, query: dict[str, str], body: bytes, simulate_slow: bool
    ) -> SandboxResponse:
        with self._state:
            m.member_lookups += 1
        errors: dict[str, list[str]] = {}
        offset, limit = paging(query, errors)
        phone = query.get("phonenumber")
        if phone is not None and not re.fullmatch(r"[0-9]{1,16}", phone):
            errors["phonenumber"] = ["Digits only, no spaces or dashes."]
        if errors:
            return envelope(400, "Bad Request", errors)
        with self._state:
            members = list(self._members.values())
            if "profileId" in query or "loyaltyNumber" in query:  # documented: one member, not a list
                for member in members:
                    if (
                        query.get("profileId", member.profile_id) == member.profile_id
                        and query.get("loyaltyNumber", member.loyalty_number) == member.loyalty_number
                    ):
                        return envelope(200, "Success", data=member_resource(member))
                return envelope(404, "Member not found")
            found = [
                member
                for member in members
                if (phone is None or member.phone == phone)
                and ("email" not in query or member.email.lower() == query["email"].lower())
            ]
            page = [member_resource(member) for member in found[offset : offset + limit]]
            quirk = self.members_answer
        if quirk == "unrecognised":
            content = [{"id": item["loyaltyNumber"], "name": item["firstName"]} for item in page]
            return envelope(200, "Success", data={"content": content, "totalElements": len(content)})
        return envelope(200, "Success", data=page)
