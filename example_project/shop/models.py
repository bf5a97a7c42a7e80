"""The example shop's catalogue and orders: just enough of a real shop to earn loyalty points on."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils.translation import gettext_lazy as _

ZERO = Decimal("0.00")


class Customer(models.Model):
    name = models.CharField(_("name"), max_length=200)
    phone = models.CharField(_("mobile phone"), max_length=32, help_text=_("As the customer typed it."))

    class Meta:
        verbose_name = _("customer")
        verbose_name_plural = _("customers")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    name = models.CharField(_("name"), max_length=200)
    sku = models.CharField(_("SKU"), max_length=64, unique=True)
    price = models.DecimalField(_("price (SAR)"), max_digits=10, decimal_places=2)

    class Meta:
        verbose_name = _("product")
        verbose_name_plural = _("products")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending payment")
        PAID = "paid", _("Paid")
        REFUNDED = "refunded", _("Refunded")

    class Brand(models.TextChoices):
        """The shop sells under two brands, each with its own loyalty programme (see shop.adapters)."""

        CAFE = "cafe", _("Qahwa café")  # Points
        BOUTIQUE = "boutique", _("Oud boutique")  # fabric Loyalty

    number = models.CharField(_("order number"), max_length=40, unique=True)
    brand = models.CharField(_("brand"), max_length=16, choices=Brand.choices, default=Brand.CAFE)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="orders", verbose_name=_("customer"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    shipping_amount = models.DecimalField(_("shipping"), max_digits=10, decimal_places=2, default=ZERO)
    tax_amount = models.DecimalField(_("tax"), max_digits=10, decimal_places=2, default=ZERO)
    discount_amount = models.DecimalField(_("discount"), max_digits=10, decimal_places=2, default=ZERO)
    city = models.CharField(_("city"), max_length=100, blank=True)
    address_line = models.CharField(_("address"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    paid_at = models.DateTimeField(_("paid"), null=True, blank=True)

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.number

    @property
    def lines_total(self) -> Decimal:
        # Summed in Python: exact Decimal arithmetic on every database, and it uses prefetched lines.
        return sum((line.line_total for line in self.lines.all()), ZERO)

    @property
    def total(self) -> Decimal:
        """What the customer paid, in SAR: the lines, plus shipping and tax, less the discount."""
        total = self.lines_total + self.shipping_amount + self.tax_amount - self.discount_amount
        return total.quantize(Decimal("0.01"))


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines", verbose_name=_("order"))
    product = models.ForeignKey(
        Product, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("product")
    )
    name = models.CharField(_("name"), max_length=200, help_text=_("The product's name when it was ordered."))
    unit_price = models.DecimalField(_("unit price (SAR)"), max_digits=10, decimal_places=2)
    quantity = models.PositiveIntegerField(_("quantity"), default=1)

    class Meta:
        verbose_name = _("order line")
        verbose_name_plural = _("order lines")
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.name}"

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


class Review(models.Model):
    """A customer's review of the shop (no product) or of a product. Approving it (shop.services.approve_review)
    earns the merchant's flat rating points on Points."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="reviews", verbose_name=_("customer"))
    product = models.ForeignKey(
        Product,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="reviews",
        verbose_name=_("product"),
        help_text=_("Empty: a review of the shop itself."),
    )
    rating = models.PositiveSmallIntegerField(_("rating (1-5)"), null=True, blank=True)
    comment = models.TextField(_("comment"), blank=True)
    approved_at = models.DateTimeField(_("approved"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("review")
        verbose_name_plural = _("reviews")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"review-{self.pk}"
