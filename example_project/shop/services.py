"""The shop's order and review operations. Payment confirmation and a review's approval are where loyalty points
are earned."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from django_points_earn.signals import order_paid, order_refunded, review_approved

from .models import Order, Review


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


class ReviewAlreadyApproved(Exception):
    """The review was approved before: it earned (or is earning) its points once already."""


def approve_review(review: Review) -> Review:
    """Approve ``review`` after moderation and tell django_points_earn, in one transaction (as ``mark_paid``)."""
    with transaction.atomic():
        locked = Review.objects.select_for_update().select_related("customer", "product").get(pk=review.pk)
        if locked.approved_at is not None:
            raise ReviewAlreadyApproved(f"review {locked.pk} was approved at {locked.approved_at}")
        locked.approved_at = timezone.now()
        locked.save(update_fields=["approved_at"])
        review_approved.send(sender=Review, review=locked)
    review.approved_at = locked.approved_at
    return locked
