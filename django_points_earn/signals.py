"""The app's signals.

Inputs (the shop sends them):
- ``order_paid(sender, order=...)``: payment for ``order`` is confirmed. Send it inside the transaction that marks
  the order paid; the earning is recorded in that same transaction and sent after it commits.

Outputs (the app sends them, from the worker, after the state is saved):
- ``earning_awarded(sender=EarningRecord, record=...)``: the platform confirmed the points.
- ``earning_failed(sender=EarningRecord, record=...)``: the record now needs a human (rejected, blocked, failed).
"""

from django.dispatch import Signal

order_paid = Signal()
order_refunded = Signal()

earning_awarded = Signal()
earning_failed = Signal()
