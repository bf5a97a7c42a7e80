"""The shop's order operations. Payment confirmation is where loyalty points are earned."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from django_points_earn.signals import order_paid, order_refunded

from .models import Order


class OrderNotPayable(Exception):
    """The order is not waiting for payment (already paid, or refunded)."""


def mark_paid(order: Order) -> Order:
    """Mark ``order`` paid and tell django_points_earn, in one transaction.

    The earning record is written by the signal's receiver inside this transaction, so an order is never paid
    without its earning, and a rollback leaves neither. Points are sent by a worker after the commit.
    """
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.status != Order.Status.PENDING:
            raise OrderNotPayable(f"order {locked.number} is {locked.status}, not pending")
        locked.status = Order.Status.PAID
        locked.paid_at = timezone.now()
        locked.save(update_fields=["status", "paid_at"])
        order_paid.send(sender=Order, order=locked)
    order.status, order.paid_at = locked.status, locked.paid_at
    return locked


def refund(order: Order, amount: Decimal | None = None, *, reason: str, refund_id: str) -> Order:
    """Refund ``order`` (all of it, or ``amount``) and tell django_points_earn, in one transaction.

    The points are taken back by a worker after the commit, in proportion for a partial refund.
    """
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.status != Order.Status.PAID:
            raise OrderNotPayable(f"order {locked.number} is {locked.status}, not paid")
        if amount is None:
            locked.status = Order.Status.REFUNDED
            locked.save(update_fields=["status"])
        order_refunded.send(sender=Order, order=locked, amount=amount, reason=reason, refund_id=refund_id)
    return locked
