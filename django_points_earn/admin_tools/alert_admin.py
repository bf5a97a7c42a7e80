"""The balance alerts' admin page: every alert kept (webhooks and 403 answers), read-only, with one action (mark
resolved, for people with ``resolve_merchantalert``). The banner itself is on the dashboard and the earnings list."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import merchant_alerts
from ..models import MerchantAlert
from .read_only import ReadOnlyAdmin

RESOLVE_PERM = "django_points_earn.resolve_merchantalert"


class MerchantAlertAdmin(ReadOnlyAdmin):
    list_display = (
        "received_at",
        "account",
        "kind",
        "current_balance",
        "balance_after_order",
        "max_debt_allowed",
        "message",
        "resolved_at",
        "resolved_by",
    )
    list_filter = ("kind", "account")
    readonly_fields = (
        "account",
        "kind",
        "message",
        "current_balance",
        "order_points",
        "balance_after_order",
        "max_debt_allowed",
        "merchant_name",
        "platform_time",
        "received_at",
        "resolved_at",
        "resolved_by",
    )
    exclude = ("dedupe_key",)
    exact_search = ("account",)
    search_fields = ("account",)
    actions = ["resolve_selected"]

    @admin.action(description=gettext_lazy("Mark resolved (hide the banner)"), permissions=["resolve"])
    def resolve_selected(self, request: HttpRequest, queryset: QuerySet[MerchantAlert]) -> None:
        accounts = sorted(set(queryset.filter(resolved_at__isnull=True).values_list("account", flat=True)))
        for account in accounts:
            count = merchant_alerts.resolve(account, actor=request.user.get_username())
            self.message_user(
                request,
                _("Balance alerts of account %(account)s marked resolved: %(count)d.")
                % {"account": account, "count": count},
                messages.SUCCESS,
            )

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RESOLVE_PERM)
