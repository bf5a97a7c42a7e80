"""Every kind of outbox row, for the code that treats them alike: the drain looks for due work in each, the sweep
recovers each one's expired leases. A new kind (a model on :class:`~django_points_earn.models.OutboxRow`, its
:class:`~django_points_earn.outbox.Machine`) is added here."""

from __future__ import annotations

from .earning_states import EARNINGS
from .outbox import Machine
from .reversal_lifecycle import REVERSALS

# In the order the drain looks for due work: earnings first, refunds when no earning is due.
MACHINES: tuple[Machine, ...] = (EARNINGS, REVERSALS)
