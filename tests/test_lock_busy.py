"""Issue 15 item 4: a 429 that says Points' per-merchant lock is busy is asked again after a short pause.

Points holds its lock for one earning call, so a refused earning waits ``RETRY["LOCK_BUSY_DELAY"]`` (1x-2x), not
the 1-2 s of ``RATE_LIMIT_DELAY``, while the account's other earnings go out meanwhile. Under a 429 storm the
long wait left the account idle once nothing else was due (the run's tail). A lock held for long falls back to
RATE_LIMIT_DELAY after ``LOCK_BUSY_RETRIES``; an earning whose outcome is unknown and fabric's 429 (a rate limit,
not a lock) always wait RATE_LIMIT_DELAY. The tests on the short pause fail before it (every gap was >= 1 s).
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from django_points_earn.models import EarningAttempt, EarningRecord, Status
from tests.conftest import settle
from tests.test_stalled_account import with_settings

pytestmark = pytest.mark.django_db(transaction=True)

# The library's own 429 wait and floor, so that the short pause cannot be mistaken for them.
SLOW = {"MIN_DELAY": 1.0, "RATE_LIMIT_DELAY": 1.0, "LOCK_BUSY_DELAY": 0.1}


def gaps(record: EarningRecord) -> list[float]:
    """Seconds from the end of each call of the record to the start of its next one."""
    attempts = list(record.attempt_set.order_by("number"))
    return [(b.started_at - a.finished_at).total_seconds() for a, b in pairwise(attempts)]


def test_a_lock_busy_429_is_asked_again_after_a_short_pause_and_the_account_goes_on(place_order, points_api, settings):
    with_settings(settings, RETRY=SLOW)
    points_api.script("429")  # Points: "Another earning request is being processed, please retry shortly"
    place_order("SO-L1")
    place_order("SO-L2")
    settle()

    refused = EarningRecord.objects.get(order_number="SO-L1")
    assert refused.status == Status.AWARDED
    assert list(refused.attempt_set.order_by("number").values_list("outcome", flat=True)) == [
        "rate_limited",
        "awarded",
    ]
    assert (refused.rate_limited, refused.attempts) == (1, 0)  # no attempt used up
    [gap] = gaps(refused)
    assert 0.1 <= gap < 1.0  # LOCK_BUSY_DELAY (0.1-0.2 s), not RATE_LIMIT_DELAY (1-2 s)
    # The account did not pause: the next order went out while the refused one waited, and was not refused.
    calls = list(EarningAttempt.objects.order_by("started_at").values_list("record__order_number", "outcome"))
    assert calls == [("SO-L1", "rate_limited"), ("SO-L2", "awarded"), ("SO-L1", "awarded")]
    assert (points_api.awards("SO-L1"), points_api.awards("SO-L2"), points_api.overlaps("main")) == (1, 1, 0)


def test_a_lock_held_for_long_falls_back_to_the_rate_limit_wait(place_order, points_api, settings):
    with_settings(
        settings, RETRY={"MIN_DELAY": 0.5, "RATE_LIMIT_DELAY": 0.5, "LOCK_BUSY_DELAY": 0.05, "LOCK_BUSY_RETRIES": 2}
    )
    points_api.script("429", "429", "429")
    place_order("SO-LONG")
    settle()

    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED and (record.rate_limited, record.attempts) == (3, 0)
    quick, quick_again, slow = gaps(record)
    assert 0.05 <= quick < 0.5 and 0.05 <= quick_again < 0.5  # the first LOCK_BUSY_RETRIES: short
    assert slow >= 0.5  # then RATE_LIMIT_DELAY, so MAX_RATE_LIMITED is not spent within seconds
    assert points_api.awards("SO-LONG") == 1


def test_a_429_to_an_earning_whose_outcome_is_unknown_waits_the_rate_limit_delay(place_order, points_api, settings):
    """After a 500 the platform may have the order, or still be busy with it: no short pause for that record."""
    with_settings(settings, RETRY={**SLOW, "BASE_DELAY": 0.05, "MIN_DELAY": 0.05, "RATE_LIMIT_DELAY": 0.6})
    points_api.script("500", "429")
    place_order("SO-UNK")
    settle()

    record = EarningRecord.objects.get()
    assert list(record.attempt_set.order_by("number").values_list("outcome", flat=True)) == [
        "unavailable",
        "rate_limited",
        "awarded",
    ]
    assert gaps(record)[1] >= 0.6
    assert points_api.awards("SO-UNK") == 1


def test_fabrics_429_is_a_rate_limit_and_waits_the_rate_limit_delay(place_order, fabric_api, settings):
    """fabric's 429 is its rate limit, not a lock held for one call: the short pause is Points' lock's only."""
    with_settings(settings, RETRY={**SLOW, "MIN_DELAY": 0.6, "RATE_LIMIT_DELAY": 0.6})
    fabric_api.script("429")
    place_order("SO-FAB", account="fabric")
    settle()

    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED and record.rate_limited == 1
    assert gaps(record)[0] >= 0.6
