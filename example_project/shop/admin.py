"""The shop's admin: customers, products, orders and reviews, each showing its loyalty earning's state."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from django_points_earn.models import EarningRecord, Kind, Status

from .models import Customer, Order, OrderLine, Product, Review
from .services import OrderNotPayable, ReviewAlreadyApproved, approve_review, mark_paid


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "phone"]
    search_fields = ["name", "phone"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "sku", "price"]
    search_fields = ["name", "sku"]


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    autocomplete_fields = ["product"]
    fields = ["product", "name", "unit_price", "quantity", "line_total"]
    readonly_fields = ["line_total"]

    @admin.display(description=_("line total"))
    def line_total(self, line: OrderLine) -> str:
        return f"{line.line_total:.2f}" if line.pk else "—"


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["number", "brand", "customer", "status", "order_total", "earning_status", "created_at", "paid_at"]
    list_filter = ["status", "brand", "city", "paid_at"]
    search_fields = ["number", "customer__name", "customer__phone"]
    date_hierarchy = "created_at"
    autocomplete_fields = ["customer"]
    inlines = [OrderLineInline]
    # Payment moves the status (mark_paid, or the action below), so that the loyalty earning is never missed.
    readonly_fields = ["status", "order_total", "created_at", "paid_at"]
    fieldsets = [
        (None, {"fields": ["number", "brand", "customer", "status", "created_at", "paid_at"]}),
        (_("Amounts"), {"fields": ["shipping_amount", "tax_amount", "discount_amount", "order_total"]}),
        (_("Shipping address"), {"fields": ["city", "address_line"]}),
    ]
    actions = ["mark_selected_paid"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        earning = EarningRecord.objects.filter(kind=Kind.PURCHASE, order_number=OuterRef("number")).order_by("id")
        return (
            super()
            .get_queryset(request)
            .select_related("customer")
            .prefetch_related("lines")
            .annotate(
                earning_id=Subquery(earning.values("pk")[:1]),
                earning_status=Subquery(earning.values("status")[:1]),
            )
        )

    @admin.display(description=_("total (SAR)"))
    def order_total(self, order: Order) -> str:
        return f"{order.total:.2f}"

    @admin.display(description=_("loyalty points"), ordering="earning_status")
    def earning_status(self, order: Order) -> str:
        value = getattr(order, "earning_status", None)
        if not value:
            return "—"
        label = Status(value).label if value in Status.values else value
        url = reverse("admin:django_points_earn_earningrecord_change", args=[order.earning_id])
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.action(description=_("Mark selected orders paid (earns loyalty points)"))
    def mark_selected_paid(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        paid = 0
        for order in queryset:
            try:
                mark_paid(order)
                paid += 1
            except OrderNotPayable as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if paid:
            self.message_user(
                request, ngettext("%(n)d order marked paid.", "%(n)d orders marked paid.", paid) % {"n": paid}
            )


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["__str__", "customer", "product", "rating", "approved_at", "created_at"]
    list_filter = ["approved_at", "rating"]
    autocomplete_fields = ["customer", "product"]
    # Approval moves approved_at (approve_review, or the action below), so that the rating points are never missed.
    readonly_fields = ["approved_at", "created_at"]
    actions = ["approve_selected"]

    @admin.action(description=_("Approve selected reviews (earns rating points)"))
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        approved = 0
        for review in queryset:
            try:
                approve_review(review)
                approved += 1
            except ReviewAlreadyApproved as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if approved:
            self.message_user(
                request,
                ngettext("%(n)d review approved.", "%(n)d reviews approved.", approved) % {"n": approved},
            )
