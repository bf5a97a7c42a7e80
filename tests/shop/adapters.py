from django.db.models import prefetch_related_objects

from django_points_earn.adapters import Line, OrderAdapter


class ShopAdapter(OrderAdapter):
    def build_request(self, order):
        # Order.total and get_lines() both read the lines: load them once (a payment callback's order has none).
        prefetch_related_objects([order], "lines")
        return super().build_request(order)

    def get_account(self, order):
        return order.account

    def get_order_number(self, order):
        return order.number

    def get_phone(self, order):
        return order.phone

    def get_customer_name(self, order):
        return order.customer_name or None

    def get_total(self, order):
        return order.total

    def get_shipping_amount(self, order):
        return order.shipping or None

    def get_lines(self, order):
        return [Line(name=line.name, unit_price=line.price, quantity=line.quantity) for line in order.lines.all()]

    def get_skip_reason(self, order):
        return "customer opted out of loyalty points" if order.opted_out else None

    def paid_orders_since(self, since):
        from tests.shop.models import Order

        return Order.objects.filter(paid=True).prefetch_related("lines").iterator(chunk_size=500)

    # Reviews (Points' rating channels): the tests' reviews are plain objects with these attributes.
    def get_review_account(self, review):
        return getattr(review, "account", "main")

    def get_review_reference(self, review):
        return review.reference

    def get_review_phone(self, review):
        return review.phone

    def get_review_product_id(self, review):
        return getattr(review, "product_id", None)

    def get_review_product_name(self, review):
        return getattr(review, "product_name", None)

    def get_review_rating(self, review):
        return getattr(review, "rating", None)

    def get_review_comment(self, review):
        return getattr(review, "comment", None)

    def get_review_metadata(self, review):
        return getattr(review, "metadata", None)
