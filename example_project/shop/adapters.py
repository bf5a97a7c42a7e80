"""How django_points_earn reads this shop's orders (named in ``POINTS_EARN["ORDER_ADAPTER"]``)."""

from datetime import datetime
from decimal import Decimal

from django.db.models import Prefetch, prefetch_related_objects

from django_points_earn.adapters import Address, EarningRequest, Line, OrderAdapter

from .models import Order, OrderLine, Review

# Each brand earns on its own programme: the café on Points, the boutique on fabric Loyalty.
ACCOUNT_OF_BRAND = {Order.Brand.CAFE: "main", Order.Brand.BOUTIQUE: "boutique"}


class ShopOrderAdapter(OrderAdapter):
    def build_request(self, order: Order) -> EarningRequest:
        # The total (Order.lines_total) and get_lines() both read the lines: load them once, with their products.
        prefetch_related_objects([order], Prefetch("lines", queryset=OrderLine.objects.select_related("product")))
        return super().build_request(order)

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
            for line in order.lines.all()  # prefetched by build_request
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

    # -- reviews: Points' rating channels (only the café's programme, Points, has them) ---------------------------
    def get_review_account(self, review: Review) -> str:
        return ACCOUNT_OF_BRAND[Order.Brand.CAFE]

    def get_review_reference(self, review: Review) -> str:
        return f"review-{review.pk}"  # never one of the shop's order numbers (they share Points' numbering)

    def get_review_phone(self, review: Review) -> str:
        return review.customer.phone

    def get_review_product_id(self, review: Review) -> str | None:
        return review.product.sku if review.product else None

    def get_review_product_name(self, review: Review) -> str | None:
        return review.product.name if review.product else None

    def get_review_rating(self, review: Review) -> int | None:
        return review.rating

    def get_review_comment(self, review: Review) -> str | None:
        return review.comment or None
