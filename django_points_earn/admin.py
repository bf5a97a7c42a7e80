"""Merchant-facing admin: every earning, its attempts and its history; read-only except the explicit actions.

The building blocks live in :mod:`django_points_earn.admin_tools`; this module wires them into Django admin.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .admin_tools import actions as admin_actions
from .admin_tools import display, earning_page, operations
from .admin_tools.alert_admin import MerchantAlertAdmin
from .admin_tools.dashboard import DashboardAdmin, balance_banner
from .admin_tools.delivery_admin import WebhookDeliveryAdmin
from .admin_tools.filters import AccountFilter, HeldFilter, NeedsAttentionFilter, PlatformFilter, refuse_nul
from .admin_tools.paginator import CappedChangeList, CappedCountPaginator, limit_for_page
from .admin_tools.read_only import ReadOnlyAdmin
from .admin_tools.reversal_admin import ReversalAdmin
from .models import (
    AccountState,
    EarningRecord,
    MerchantAlert,
    ReconciliationDashboard,
    Reversal,
    Status,
    WebhookDelivery,
)
from .phones import InvalidPhone, mask_phone, normalize_ksa_mobile


@admin.register(EarningRecord)
class EarningRecordAdmin(admin.ModelAdmin):
    list_display = (
        "state_badge",
        "account",
        "kind",
        "order_number",
        "phone_masked",
        "total",
        "points",
        "held_until",
        "failed_attempts",
        "age",
        "last_error",
    )
    list_display_links = ("order_number",)
    list_filter = ("status", "kind", NeedsAttentionFilter, HeldFilter, AccountFilter, PlatformFilter, "created_at")
    search_fields = ("=order_number",)  # the real search is get_search_results: exact, indexed, phone-aware
    search_help_text = gettext_lazy(
        "Order number, Points uuid or reference number, fabric transaction code, or a phone number in any form."
    )
    ordering = ("-id",)
    list_per_page = 50
    show_full_result_count = False  # no COUNT(*) of the whole table on every page load
    show_facets = admin.ShowFacets.NEVER  # facet counts are one GROUP BY per filter per page load
    actions = [admin_actions.bulk_action(spec) for spec in admin_actions.SPECS.values()]

    # -- read only ---------------------------------------------------------------------------------------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # records change only through the actions below

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # One method per custom permission, as ``@admin.action(permissions=[...])`` expects.
    def has_retry_permission(self, request: HttpRequest) -> bool:
        return admin_actions.SPECS["retry"].allowed(request)

    def has_verify_permission(self, request: HttpRequest) -> bool:
        return admin_actions.SPECS["verify"].allowed(request)

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return admin_actions.SPECS["resolve"].allowed(request)

    def has_correct_permission(self, request: HttpRequest) -> bool:
        return admin_actions.SPECS["correct"].allowed(request)

    def has_reverse_permission(self, request: HttpRequest) -> bool:
        return admin_actions.SPECS["reverse"].allowed(request)

    def has_send_now_permission(self, request: HttpRequest) -> bool:
        return admin_actions.SPECS["send_now"].allowed(request)

    def has_extend_hold_permission(self, request: HttpRequest) -> bool:
        return admin_actions.SPECS["extend_hold"].allowed(request)

    # -- the list ----------------------------------------------------------------------------------------------
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type:
        return CappedChangeList

    def get_paginator(self, request: HttpRequest, queryset: QuerySet, per_page: int, **kwargs: Any):
        limit = limit_for_page(request.GET.get("p", 1), per_page)
        return CappedCountPaginator(queryset, per_page, limit=limit, **kwargs)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """Exact matches on indexed columns only (no ``LIKE '%…%'`` over a million rows)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        q = Q(order_number=term) | Q(remote_id=term) | Q(remote_reference=term)
        try:
            q |= Q(phone=normalize_ksa_mobile(term))
        except InvalidPhone:
            pass
        return queryset.filter(q), False

    @admin.display(description=gettext_lazy("state"), ordering="status")
    def state_badge(self, obj: EarningRecord) -> str:
        return display.badge(obj)

    @admin.display(description=gettext_lazy("phone"))
    def phone_masked(self, obj: EarningRecord) -> str:
        return mask_phone(obj.phone)

    @admin.display(description=gettext_lazy("held until"), ordering="send_after")
    def held_until(self, obj: EarningRecord) -> str:
        if obj.status != Status.HELD:
            return "—"
        if obj.send_after is None:
            return _("until delivered")
        return date_format(timezone.localtime(obj.send_after), "SHORT_DATETIME_FORMAT")

    @admin.display(description=gettext_lazy("failed attempts"), ordering="attempts")
    def failed_attempts(self, obj: EarningRecord) -> int:
        return obj.attempts  # the retry budget used, not the calls made (those are on the earning's page)

    @admin.display(description=gettext_lazy("age"), ordering="created_at")
    def age(self, obj: EarningRecord) -> str:
        return display.age(obj.created_at)

    @admin.display(description=gettext_lazy("reason / last error"))
    def last_error(self, obj: EarningRecord) -> str:
        return display.last_error_cell(obj)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        refuse_nul(request)
        banner = balance_banner(request)
        return super().changelist_view(request, {"title": _("Earnings"), **banner, **(extra_context or {})})

    # -- the earning page and its buttons ------------------------------------------------------------------------
    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        custom = [
            path(
                f"<path:object_id>/{name}/",
                wrap(self.object_action_view),
                {"action": name},
                name="{}_{}_{}".format(*info, name),
            )
            for name in admin_actions.SPECS
        ]
        return custom + super().get_urls()

    def _admin_context(self, request: HttpRequest) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts}

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        record = self.get_object(request, unquote(object_id))
        if record is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, record):
            raise PermissionDenied
        context = {
            **self._admin_context(request),
            **earning_page.context(request, record),
            "title": _("Earning %(order)s") % {"order": record.order_number},
            "original": record,
            "dashboard_url": reverse("admin:django_points_earn_reconciliationdashboard_changelist"),
        }
        return TemplateResponse(request, "admin/django_points_earn/earningrecord/earning.html", context)

    def object_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        if not self.has_view_permission(request):  # an action's page shows the earning: seeing it comes first
            raise PermissionDenied
        spec = admin_actions.SPECS[action]
        if not spec.allowed(request):
            return admin_actions.refused(request, self._admin_context(request), spec)
        record = self.get_object(request, unquote(object_id))
        if record is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        page = reverse("admin:django_points_earn_earningrecord_change", args=[record.pk])
        response = admin_actions.confirm_or_run(
            request, spec, [record], admin_context=self._admin_context(request), hidden=[], back_url=page
        )
        return response or HttpResponseRedirect(page)


@admin.register(AccountState)
class AccountStateAdmin(ReadOnlyAdmin):
    list_display = ("account", "paused", "reason", "paused_at", "resumed_at", "resumed_by")
    readonly_fields = ("account", "paused", "reason", "paused_at", "resumed_at", "resumed_by")
    actions = ["resume_selected"]

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        if "\x00" in object_id:  # the account is the primary key: PostgreSQL refuses a NUL in it outright
            return None
        return super().get_object(request, object_id, from_field)

    @admin.action(description=gettext_lazy("Resume (send the blocked earnings again)"), permissions=["resume"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[AccountState]) -> None:
        for state in queryset.filter(paused=True):
            count = operations.resume(state.account, actor=request.user.get_username())
            self.message_user(
                request,
                _("Account %(account)s resumed; earnings queued again: %(count)d.")
                % {"account": state.account, "count": count},
                messages.SUCCESS,
            )

    def has_resume_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_points_earn.resume_accountstate")


admin.site.register(ReconciliationDashboard, DashboardAdmin)
admin.site.register(Reversal, ReversalAdmin)
admin.site.register(WebhookDelivery, WebhookDeliveryAdmin)
admin.site.register(MerchantAlert, MerchantAlertAdmin)
