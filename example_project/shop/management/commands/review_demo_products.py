"""Customers review what they bought, and the shop approves the reviews: ``manage.py review_demo_products``.

Each approval sends ``review_approved``: two product reviews and one review of the shop earn the merchant's flat
rating points on Points (the sandbox's 20 per product review, 50 per shop review).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from shop.models import Customer, Order, Review
from shop.services import approve_review


class Command(BaseCommand):
    help = "Approve a few demo reviews (product and shop), each earning rating points on Points."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=3, help="reviews to approve (default 3)")

    def handle(self, *args: Any, **options: Any) -> None:
        paid = (
            Order.objects.filter(status=Order.Status.PAID, brand=Order.Brand.CAFE)
            .exclude(customer__phone__in=["12345", "0500000003"])  # no Saudi mobile; no Points account yet
            .select_related("customer")
            .prefetch_related("lines__product")
            .order_by("id")
        )
        approved = []
        for i, order in enumerate(paid[: options["count"]]):
            line = order.lines.first()
            product = line.product if line is not None and i % 3 != 2 else None  # every third: a shop review
            review = Review.objects.create(
                customer=Customer.objects.get(pk=order.customer_id),
                product=product,
                rating=5 - i % 2,
                comment="ممتاز" if product is None else f"{product.name}: very good",
            )
            approve_review(review)
            approved.append(f"review-{review.pk} ({'product ' + product.sku if product else 'shop'})")
        self.stdout.write(f"Approved {len(approved)} reviews: {', '.join(approved)}")
