"""The shop's signals out (:mod:`django_points_earn.signals`): sent once the transaction that made the change
commits, and never raising into the machine that made it. A receiver that fails is logged, with its traceback, on
the ``django_points_earn`` logger; the earning or refund it was told about stays as it was saved."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from .models import NEEDS_ATTENTION, EarningRecord, Reversal, Status
from .signals import earning_needs_attention, points_awarded, points_reversed

log = logging.getLogger("django_points_earn")


def earning_settled(record: EarningRecord) -> None:
    """An earning just reached a state the shop hears about: ``awarded`` (``points_awarded``) or one a person must
    act on (``earning_needs_attention``). Any other state sends nothing."""
    if record.status == Status.AWARDED:
        after_commit(points_awarded, EarningRecord, record=record)
    elif record.status in NEEDS_ATTENTION:
        after_commit(earning_needs_attention, EarningRecord, record=record)


def reversal_reversed(reversal: Reversal) -> None:
    """A refund reached ``reversed`` in the current transaction: ``points_reversed`` once it commits, with the
    reversal (and its earning) as committed, read again then (a refund's answer may settle its earning after this
    call, in the same transaction)."""
    pk = reversal.pk
    transaction.on_commit(lambda: _send_reversed(pk))


def _send_reversed(pk: int) -> None:
    reversal = Reversal.objects.select_related("record").filter(pk=pk).first()
    if reversal is not None:
        send_robustly(points_reversed, Reversal, reversal=reversal)


def after_commit(signal: Signal, sender: type, **kwargs: Any) -> None:
    """``signal`` once the current transaction commits (at once outside one); nothing if it rolls back."""
    transaction.on_commit(lambda: send_robustly(signal, sender, **kwargs))


def send_robustly(signal: Signal, sender: type, **kwargs: Any) -> None:
    """Every receiver is called; one that raises is logged, and neither stops the others nor reaches the caller."""
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            log.error(
                "a receiver of the %s signal failed (%s); the app carries on",
                _name(signal),
                getattr(receiver, "__qualname__", repr(receiver)),
                exc_info=(type(result), result, result.__traceback__),
            )


def _name(signal: Signal) -> str:
    names = {
        id(points_awarded): "points_awarded",
        id(points_reversed): "points_reversed",
        id(earning_needs_attention): "earning_needs_attention",
    }
    return names.get(id(signal), repr(signal))
