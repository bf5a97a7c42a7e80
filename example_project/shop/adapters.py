"""How django_points_earn reads this shop's orders (named in ``POINTS_EARN["ORDER_ADAPTER"]``)."""

from datetime import datetime
from decimal import Decimal

from django_points_earn.adapters import Address, Line, OrderAdapter

from .models import Order

# Each brand earns on its own programme: the café on Points, the boutique on fabric Loyalty.
ACCOUNT_OF_BRAND = {Order.Brand.CAFE: "main", Order.Brand.BOUTIQUE: "boutique"}


class ShopOrderAdapter(OrderAdapter):
    def get_account(self, order: Order) -> str:
        return ACCOUNT_OF_BRAND[order.brand]

    def get_order_number(self, order: Order) -> str:
        return order.number

    def get_phone(self, order: Order) -> str:
        return order.customer.phone  # as typed; the app normalises it, or rejects it with the reason

    def get_total(self, order: Order) -> Decimal:
        return order.total

    def get_lines(self, order: Order) -> list[Line]:
        return [
            Line(
                name=line.name,
                unit_price=line.unit_price,  # without VAT: the order's tax_amount is added on top
                quantity=line.quantity,
                sku=line.product.sku if line.product else None,
            )
            for line in order.lines.select_related("product")
        ]

    def get_customer_name(self, order: Order) -> str:
        return order.customer.name

    def get_shipping_amount(self, order: Order) -> Decimal:
        return order.shipping_amount

    def get_tax_amount(self, order: Order) -> Decimal:
        return order.tax_amount

    def get_discount_amount(self, order: Order) -> Decimal:
        return order.discount_amount

    def get_shipping_address(self, order: Order) -> Address:
        return Address(city=order.city, line1=order.address_line)

    def get_paid_at(self, order: Order) -> datetime | None:
        return order.paid_at
