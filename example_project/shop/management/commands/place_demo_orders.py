"""Place and pay demo orders, as customers checking out would: ``manage.py place_demo_orders [--count 50]``.

The customers type their phone numbers in every form Points accepts (``+9665…``, ``009665…``, ``9665…``,
``05…``, ``5…``, with spaces, dashes or Arabic-Indic digits). About a third of the orders are the boutique's
(fabric Loyalty), the rest the café's (Points). Three customers are special, with one order each: one has not
activated Points yet (``0500000003``, the sandbox's pending phone), one typed a phone that is not a Saudi
mobile, and one shops at the boutique without being a member of its programme.
"""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from shop.models import Customer, Order, OrderLine, Product
from shop.services import mark_paid

CUSTOMERS = [
    ("Ahmed Al-Saud", "+966512345678"),
    ("فاطمة الحربي", "00966 55 123 4567"),
    ("Khalid Al-Qahtani", "0551234568"),
    ("نورة العتيبي", "561234569"),
    ("Omar Al-Ghamdi", "+966-54-123-4570"),
    ("سارة الزهراني", "٠٥٣١٢٣٤٥٧١"),  # Arabic-Indic digits
    ("Yousef Al-Dosari", "966 59 123 4572"),
    ("Layla Al-Shehri", "(050) 123-4573"),
]
PENDING_CUSTOMER = ("ريم المطيري", "0500000003")  # no Points account yet: the earning waits for activation
MALFORMED_CUSTOMER = (
    "Test Customer",
    "12345",
)  # not a Saudi mobile: rejected before any call, with the reason
NON_MEMBER_CUSTOMER = ("حصة المطيري", "0559876543")  # buys at the boutique, never joined its programme

PRODUCTS = [
    ("قهوة سعودية 250g", "COF-250", Decimal("45.00")),
    ("Sukkari dates 1 kg", "DAT-SUK-1", Decimal("60.00")),
    ("Cardamom 100 g", "SPC-CAR-100", Decimal("22.50")),
    ("بخور عود", "OUD-INC", Decimal("120.00")),
    ("Prayer mat", "MAT-PRY", Decimal("85.00")),
    ("Thermos flask 1 L", "FLK-1L", Decimal("75.00")),
    ("Majlis cushion", "CSH-MJL", Decimal("140.00")),
    ("Cappuccino", "CAP-REG", Decimal("18.50")),
]
ADDRESSES = [
    ("Riyadh", "1234 King Fahd Rd, Al Olaya"),
    ("Jeddah", "45 Tahlia St, Al Andalus"),
    ("الدمام", "شارع الملك سعود، حي الشاطئ"),
    ("Makkah", "7 Ibrahim Al Khalil St"),
    ("Al Khobar", "22 Prince Turki St, Al Corniche"),
]
VAT = Decimal("0.15")
CENTS = Decimal("0.01")


class Command(BaseCommand):
    help = "Create demo customers and products, then place and pay N orders (each earns loyalty points)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=50, help="how many orders to place (default 50)")
        parser.add_argument("--seed", type=int, default=7, help="random seed, for a repeatable shop (default 7)")

    def handle(self, *args: Any, count: int, seed: int, **options: Any) -> None:
        rng = random.Random(seed)
        regular = [self.customer(name, phone) for name, phone in CUSTOMERS]
        special = [
            (self.customer(*PENDING_CUSTOMER), Order.Brand.CAFE),
            (self.customer(*MALFORMED_CUSTOMER), Order.Brand.CAFE),
            (self.customer(*NON_MEMBER_CUSTOMER), Order.Brand.BOUTIQUE),
        ]
        products = [self.product(*row) for row in PRODUCTS]
        numbered = Order.objects.filter(number__regex=r"^SHOP-[0-9]{5}$").order_by("-number")
        last = numbered.values_list("number", flat=True).first()
        first = int(last.removeprefix("SHOP-")) + 1 if last else 1
        numbers, brands = [], Counter()
        for i in range(count):
            if i < len(special):
                customer, brand = special[i]
            else:
                customer, brand = rng.choice(regular), rng.choice([Order.Brand.CAFE] * 2 + [Order.Brand.BOUTIQUE])
            order = self.place_order(f"SHOP-{first + i:05d}", customer, brand, products, rng)
            mark_paid(order)
            numbers.append(order.number)
            brands[brand] += 1
        if numbers:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Placed and paid {len(numbers)} orders ({numbers[0]} … {numbers[-1]}): "
                    f"{brands[Order.Brand.CAFE]} at the café (Points), {brands[Order.Brand.BOUTIQUE]} at the "
                    f"boutique (fabric); {min(count, len(special))} for the special customers (awaiting Points "
                    "activation, malformed phone, not a boutique member)."
                )
            )

    @staticmethod
    def customer(name: str, phone: str) -> Customer:
        return Customer.objects.get_or_create(name=name, phone=phone)[0]

    @staticmethod
    def product(name: str, sku: str, price: Decimal) -> Product:
        return Product.objects.get_or_create(sku=sku, defaults={"name": name, "price": price})[0]

    @staticmethod
    @transaction.atomic
    def place_order(number: str, customer: Customer, brand: str, products: list[Product], rng: random.Random) -> Order:
        """Checkout: the order and its lines, awaiting payment."""
        city, address = rng.choice(ADDRESSES)
        order = Order.objects.create(number=number, brand=brand, customer=customer, city=city, address_line=address)
        for product in rng.sample(products, k=rng.randint(1, 4)):
            OrderLine.objects.create(
                order=order,
                product=product,
                name=product.name,
                unit_price=product.price,
                quantity=rng.randint(1, 3),
            )
        subtotal = order.lines_total
        order.discount_amount = rng.choice(
            [Decimal("0.00"), Decimal("0.00"), Decimal("10.00"), (subtotal * Decimal("0.10")).quantize(CENTS)]
        )
        order.shipping_amount = Decimal("0.00") if subtotal >= 200 else Decimal("25.00")
        order.tax_amount = ((subtotal - order.discount_amount + order.shipping_amount) * VAT).quantize(CENTS)
        order.save(update_fields=["discount_amount", "shipping_amount", "tax_amount"])
        return order
