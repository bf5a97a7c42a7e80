"""What the drain's parts share: what one call did (:class:`Sent`), what a drain did (:class:`DrainReport`), an
error of ours given as a call's answer, and whether the account lock is still ours."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from redis.exceptions import RedisError

from .models import EarningRecord, Status
from .providers.base import UNAVAILABLE, EarnResult, scrub


class Sent(NamedTuple):
    """What one call did: the record's (or reversal's) new status, and whether the platform may still be working
    on it (no answer within the timeout: its side of the call can outlive ours); the record as saved."""

    status: str
    platform_may_be_busy: bool = False
    record: EarningRecord | None = None


@dataclass
class DrainReport:
    account: str
    sent: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    busy: bool = False  # another job held the account
    paused: bool = False
    continued: bool = False  # time was up; a successor job was enqueued
    held: bool = False  # the account must wait longer than a worker should idle (the sweep brings it back when due)

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def count(report: DrainReport, sent: Sent) -> None:
    """Add one call's outcome to the drain's report; a blocked answer marks the account paused."""
    report.sent += 1
    report.outcomes[sent.status] = report.outcomes.get(sent.status, 0) + 1
    if sent.status == Status.BLOCKED:
        report.paused = True


def local_error(what: str, exc: BaseException) -> EarnResult:
    """An error of ours, not an answer: retried with backoff; unknown whether anything reached the platform."""
    message = f"{what}: {type(exc).__name__}: {scrub(str(exc))}"[:1000]
    return EarnResult(UNAVAILABLE, message=message, outcome_unknown=True, local_error=True)


def still_ours(lock) -> bool:
    """Extend the account lock after a wait; False if it is gone (expired, or Redis lost it): stop draining."""
    try:
        lock.reacquire()
        return True
    except RedisError:  # LockError, or Redis unreachable: not provably ours, so no call
        return False
