"""Two shipped gift-box orders whose points are held until the return window closes: ``manage.py place_held_orders``.

Both are paid at the café (Points). The first is kept: its points go out when the window (``SHOP_RETURN_WINDOW``;
the demo's is 2 minutes) has closed. The second is returned during its window and refunded in full: its earning is
cancelled and never reaches Points. Prints both order numbers and the states their earnings are in.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from django_points_earn.models import EarningRecord
from shop.models import Customer, Order, OrderLine, Product
from shop.services import mark_paid, refund

GIFT_BOX = ("Gift box of dates and Saudi coffee (shipped)", "GIFT-BOX", Decimal("320.00"))
CUSTOMER = ("Ahmed Al-Saud", "+966512345678")
VAT = Decimal("0.15")


class Command(BaseCommand):
    help = "Pay two shipped orders (points held for the return window); refund the second while it is held."

    def handle(self, *args: Any, **options: Any) -> None:
        name, sku, price = GIFT_BOX
        product = Product.objects.get_or_create(sku=sku, defaults={"name": name, "price": price})[0]
        customer = Customer.objects.get_or_create(name=CUSTOMER[0], phone=CUSTOMER[1])[0]
        kept, returned = (self.place(f"GIFT-{n}", customer, product) for n in (1, 2))
        refund(returned, None, reason="returned within the return window", refund_id=f"RMA-{returned.number}")
        states = dict(
            EarningRecord.objects.filter(order_number__in=[kept.number, returned.number]).values_list(
                "order_number", "status"
            )
        )
        self.stdout.write(
            f"Shipped orders {kept.number} (kept: earning {states.get(kept.number)}) and {returned.number} "
            f"(returned in its window: earning {states.get(returned.number)})"
        )

    @staticmethod
    def place(prefix: str, customer: Customer, product: Product) -> Order:
        taken = Order.objects.filter(number__startswith=prefix).count()
        with transaction.atomic():
            order = Order.objects.create(
                number=f"{prefix}{taken + 1:03d}", brand=Order.Brand.CAFE, customer=customer, city="Riyadh"
            )
            OrderLine.objects.create(
                order=order, product=product, name=product.name, unit_price=product.price, quantity=1
            )
            order.tax_amount = (order.lines_total * VAT).quantize(Decimal("0.01"))
            order.save(update_fields=["tax_amount"])
        return mark_paid(order)
