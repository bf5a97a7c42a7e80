"""Refund a few paid orders the way the shop's back office would: two in full, one in part."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand

from django_points_earn.models import EarningRecord, Kind, Status
from shop.models import Order
from shop.services import refund


class Command(BaseCommand):
    help = "Refund three awarded demo orders: a Points order in full, a Points order by half, a fabric one in full."

    def handle(self, *args: Any, **options: Any) -> None:
        done = []
        plan = [("main", None), ("main", Decimal("0.5")), ("boutique", None)]
        taken: set[str] = set()
        for account, share in plan:
            record = (
                EarningRecord.objects.filter(account=account, kind=Kind.PURCHASE, status=Status.AWARDED)
                .exclude(remote_id="")
                .exclude(order_number__in=taken)
                .order_by("order_number")
                .last()
            )
            if record is None:
                continue
            taken.add(record.order_number)
            order = Order.objects.get(number=record.order_number)
            amount = None if share is None else (order.total * share).quantize(Decimal("0.01"))
            refund(order, amount, reason="returned in store", refund_id=f"RMA-{order.number}")
            done.append(f"{order.number} ({'all' if amount is None else f'{amount} of {order.total} SAR'})")
        self.stdout.write(f"Refunded {len(done)} orders: {', '.join(done)}")
