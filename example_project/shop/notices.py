"""The shop listens to django_points_earn: when an order's points are awarded, its customer is told on the order's
page ("You earned 370 loyalty points with this order"). Connected in ``ShopConfig.ready``.

The receiver runs in the worker after the award is committed (``points_awarded``); if it fails, the app logs it
and the earning stays awarded. It only writes a row: the page shows it the next time the customer opens it.
"""

from __future__ import annotations

from typing import Any

from django_points_earn.models import EarningRecord, Kind

from .models import Order, OrderNotice


def on_points_awarded(sender: Any, record: EarningRecord, **kwargs: Any) -> None:
    if record.kind != Kind.PURCHASE:
        return  # a review's rating points: no order page to tell
    order = Order.objects.filter(number=record.order_number).first()
    if order is not None:
        OrderNotice.objects.create(order=order, points=record.points)


def connect() -> None:
    from django_points_earn.signals import points_awarded

    points_awarded.connect(on_points_awarded, dispatch_uid="shop.points_awarded")
