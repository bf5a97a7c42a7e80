"""What a platform call can come to: the result vocabulary, :class:`EarnResult`, :class:`LookupResult` and the
errors a backend raises.

The lifecycle (earnings) and the reversals read only these: what a status means for a record is decided there,
never by a backend (docs/design.md, "The result vocabulary of the providers").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# The result vocabulary (docs/design.md, "The result vocabulary of the providers").
AWARDED = "awarded"
PENDING_ACTIVATION = "pending_activation"
DUPLICATE = "duplicate"
REJECTED = "rejected"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
# Not eligible after all, found out only at send time (e.g. fabric: the customer is no member, and the account says
# that means "skip"). The lifecycle records it as ``skipped``.
SKIPPED = "skipped"
RESULT_STATUSES = (
    AWARDED,
    PENDING_ACTIVATION,
    DUPLICATE,
    REJECTED,
    RATE_LIMITED,
    UNAVAILABLE,
    UNAUTHORIZED,
    FORBIDDEN,
    SKIPPED,
)

# remote_status of a reversal answer saying the platform took back every point of the earning (whatever share was
# asked): the earning is then reversed, never partially (reversal_lifecycle.complete).
FULLY_REVERSED = "fully_reversed"


class PointsEarnError(Exception):
    """Base of the app's runtime errors (configuration errors are ``ImproperlyConfigured`` instead)."""


class PlatformError(PointsEarnError):
    """The platform answered something we cannot use; carries the HTTP status and the (scrubbed) body."""

    def __init__(self, message: str, *, http_status: int | None = None, body: str = ""):
        super().__init__(message)
        self.http_status = http_status
        self.body = body


@dataclass
class EarnResult:
    status: str
    message: str = ""
    http_status: int | None = None
    # True when the platform may have acted although we did not see it confirm (timeout, 5xx, cut-off body).
    outcome_unknown: bool = False
    remote_id: str = ""
    remote_reference: str = ""
    remote_status: str = ""
    points: Decimal | None = None
    field_errors: dict[str, list[str]] = field(default_factory=dict)
    body: Any = None  # parsed JSON, when there was any
    raw_text: str = ""  # the answer as received (cut to MAX_STORED_BODY)
    retry_after: float | None = None
    # A 429 that says only that another call of this merchant holds the platform's per-merchant lock right now
    # (Points): free again within about one call, so it is asked again after RETRY["LOCK_BUSY_DELAY"], not after a
    # rate limit's RATE_LIMIT_DELAY.
    lock_busy: bool = False
    duration_ms: int | None = None
    # Fields the backend resolved on the way (e.g. fabric's profileId from a member lookup), to be kept on the
    # record's payload so the next attempt does not resolve them again. The lifecycle stores them.
    payload_update: dict[str, Any] = field(default_factory=dict)
    # The call failed inside this app (an exception of ours, not an answer): the platform cannot be busy with it
    # because of us, so the account needs no cooldown after it.
    local_error: bool = False

    def __post_init__(self) -> None:
        if self.status not in RESULT_STATUSES:
            raise ValueError(f"unknown result status {self.status!r}")


@dataclass
class LookupResult:
    """What the platform says about an earning we already sent (``found`` False: it does not know it)."""

    found: bool
    remote_id: str = ""
    remote_reference: str = ""
    remote_status: str = ""
    points: Decimal | None = None
    body: Any = None
    message: str = ""
    http_status: int | None = None
