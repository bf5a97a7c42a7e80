"""Merchant-facing admin: every earning, its attempts and its history; read-only except the explicit actions."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import lifecycle
from .models import AccountState, EarningAttempt, EarningEvent, EarningRecord, Status, Trigger
from .phones import InvalidPhone, mask_phone, normalize_ksa_mobile

BADGE_COLOURS = {
    Status.QUEUED: "#6c757d",
    Status.SENDING: "#0d6efd",
    Status.AWARDED: "#198754",
    Status.PENDING_ACTIVATION: "#6f42c1",
    Status.REJECTED: "#dc3545",
    Status.BLOCKED: "#b02a37",
    Status.FAILED: "#fd7e14",
    Status.REVERSED: "#495057",
    Status.PARTIALLY_REVERSED: "#495057",
    Status.SKIPPED: "#adb5bd",
}


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class AttemptInline(ReadOnlyInline):
    model = EarningAttempt
    fields = ("number", "started_at", "trigger", "actor", "http_status", "outcome", "duration_ms", "error")
    readonly_fields = fields


class EventInline(ReadOnlyInline):
    model = EarningEvent
    fields = ("at", "from_status", "to_status", "trigger", "actor", "note")
    readonly_fields = fields


@admin.register(EarningRecord)
class EarningRecordAdmin(admin.ModelAdmin):
    list_display = (
        "order_number",
        "badge",
        "account",
        "phone_masked",
        "total",
        "points",
        "attempts",
        "created_at",
        "reason_short",
    )
    list_filter = ("status", "account", "provider", "created_at")
    search_fields = ("=order_number", "=remote_id", "=remote_reference")
    show_full_result_count = False
    date_hierarchy = None
    inlines = [AttemptInline, EventInline]
    actions = ["retry_selected"]
    readonly_fields = (
        "account",
        "provider",
        "order_number",
        "order_id",
        "phone_masked",
        "total",
        "badge",
        "status_reason",
        "attempts",
        "rate_limited",
        "outcome_unknown",
        "next_attempt_at",
        "lease_expires_at",
        "remote_id",
        "remote_reference",
        "remote_status",
        "points",
        "payload_pretty",
        "response_pretty",
        "created_at",
        "updated_at",
        "completed_at",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:  # a phone typed in any form finds the normalised one
            phone = normalize_ksa_mobile(search_term)
        except InvalidPhone:
            return queryset, may_have_duplicates
        return queryset | self.model.objects.filter(phone=phone), may_have_duplicates

    @admin.display(description=_("state"), ordering="status")
    def badge(self, obj: EarningRecord) -> str:
        return format_html(
            '<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;white-space:nowrap">{}</span>',
            BADGE_COLOURS.get(obj.status, "#6c757d"),
            obj.get_status_display(),
        )

    @admin.display(description=_("phone"))
    def phone_masked(self, obj: EarningRecord) -> str:
        return mask_phone(obj.phone)

    @admin.display(description=_("reason"))
    def reason_short(self, obj: EarningRecord) -> str:
        text = obj.status_reason.splitlines()[0] if obj.status_reason else ""
        return text[:120] + ("…" if len(text) > 120 else "")

    @admin.display(description=_("request payload"))
    def payload_pretty(self, obj: EarningRecord) -> str:
        return _pretty(_mask_payload(obj.payload))

    @admin.display(description=_("last platform answer"))
    def response_pretty(self, obj: EarningRecord) -> str:
        return _pretty(obj.response)

    @admin.action(description=_("Send again now"), permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[EarningRecord]) -> None:
        from .queueing import request_drain_safely

        count = 0
        accounts = set()
        for record in queryset:
            if lifecycle.requeue(
                record, trigger=Trigger.ADMIN, actor=request.user.get_username(), note="sent again from the admin"
            ):
                count += 1
                accounts.add(record.account)
        for account in accounts:
            request_drain_safely(account)
        self.message_user(
            request, _("%(count)d earnings queued to be sent again.") % {"count": count}, messages.SUCCESS
        )

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_points_earn.retry_earningrecord")


@admin.register(AccountState)
class AccountStateAdmin(admin.ModelAdmin):
    list_display = ("account", "paused", "reason", "paused_at", "resumed_at", "resumed_by")
    readonly_fields = ("account", "paused", "reason", "paused_at", "resumed_at", "resumed_by")
    actions = ["resume_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=_("Resume (send the blocked earnings again)"), permissions=["retry"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[AccountState]) -> None:
        from .queueing import request_drain_safely

        for state in queryset:
            count = lifecycle.resume_account(state.account, actor=request.user.get_username())
            request_drain_safely(state.account)
            self.message_user(
                request,
                _("%(account)s resumed; %(count)d earnings queued again.") % {"account": state.account, "count": count},
                messages.SUCCESS,
            )

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_points_earn.retry_earningrecord")


def _mask_payload(payload):
    if isinstance(payload, dict) and payload.get("phone_number"):
        return {**payload, "phone_number": mask_phone(str(payload["phone_number"]))}
    return payload


def _pretty(value) -> str:
    if value in (None, ""):
        return "—"
    return format_html(
        "<pre style='white-space:pre-wrap;direction:ltr'>{}</pre>",
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )
