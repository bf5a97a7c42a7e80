"""The app's signals.

Inputs (the shop sends them):
- ``order_paid(sender, order=...)``: payment for ``order`` is confirmed. Send it inside the transaction that marks
  the order paid; the earning is recorded in that same transaction and sent after it commits.
- ``order_refunded(sender, order=..., amount=None, reason="", refund_id=None)``: (part of) the order was refunded.
- ``order_delivered(sender, order=..., delivered_at=None)``: the order reached the customer (held earnings).
- ``review_approved(sender, review=...)``: a review passed the shop's moderation (Points' rating channels). Send
  it inside the transaction that approves it; the earning is recorded there and sent after it commits.

Outputs (the app sends them, from the worker, after the state is saved; ``record.kind`` tells a purchase's earning
from a review's):
- ``earning_awarded(sender=EarningRecord, record=...)``: the platform confirmed the points.
- ``earning_failed(sender=EarningRecord, record=...)``: the record now needs a human (rejected, blocked, failed).
- ``merchant_balance_low(sender=MerchantAlert, alert=...)``: the platform warned that the merchant's balance is low
  or past its debt limit, or refused an earning with 403 (``alert.kind`` says which); sent once per alert.
"""

from django.dispatch import Signal

order_paid = Signal()
order_refunded = Signal()
# Optional: the order reached the customer. An account held "AFTER": "delivery" starts its hold's clock then.
order_delivered = Signal()
# A review passed the shop's moderation: it earns the merchant's flat rating amount (docs/ratings.md).
review_approved = Signal()

earning_awarded = Signal()
earning_failed = Signal()
merchant_balance_low = Signal()
