"""The app's signals.

Inputs (the shop sends them):
- ``order_paid(sender, order=...)``: payment for ``order`` is confirmed. Send it inside the transaction that marks
  the order paid; the earning is recorded in that same transaction and sent after it commits.
- ``order_refunded(sender, order=..., amount=None, reason="", refund_id=None)``: (part of) the order was refunded.
- ``order_delivered(sender, order=..., delivered_at=None)``: the order reached the customer (held earnings).
- ``review_approved(sender, review=...)``: a review passed the shop's moderation (Points' rating channels). Send
  it inside the transaction that approves it; the earning is recorded there and sent after it commits.

Outputs (the app sends them to the shop, each once, after the transaction that made the change commits; a receiver
that raises is logged on the ``django_points_earn`` logger and never reaches the app's machine; see
``django_points_earn.announce`` and docs/customer.md):
- ``points_awarded(sender=EarningRecord, record=...)``: the platform confirmed the points of ``record``
  (``record.kind`` tells a purchase's earning from a review's).
- ``points_reversed(sender=Reversal, reversal=...)``: a refund took points back (``reversal.record`` is its
  earning, already ``partially_reversed`` or ``reversed``).
- ``earning_needs_attention(sender=EarningRecord, record=...)``: the earning now waits for a person (``rejected``,
  ``blocked`` or ``failed``).
- ``merchant_balance_low(sender=MerchantAlert, alert=...)``: the platform warned that the merchant's balance is low
  or past its debt limit, or refused an earning with 403 (``alert.kind`` says which); sent once per alert.

``earning_awarded`` and ``earning_failed`` are the first names of ``points_awarded`` and
``earning_needs_attention``: deprecated, kept as the very same signal objects, so a receiver connected to either
name hears each event once.
"""

from django.dispatch import Signal

order_paid = Signal()
order_refunded = Signal()
# Optional: the order reached the customer. An account held "AFTER": "delivery" starts its hold's clock then.
order_delivered = Signal()
# A review passed the shop's moderation: it earns the merchant's flat rating amount (docs/ratings.md).
review_approved = Signal()

points_awarded = Signal()
points_reversed = Signal()
earning_needs_attention = Signal()

# Deprecated aliases (the same objects, so nothing is sent twice).
earning_awarded = points_awarded
earning_failed = earning_needs_attention
# Points warned the merchant about its balance (low_balance_warning, debt_exceeded): see merchant_alerts.
merchant_balance_low = Signal()
