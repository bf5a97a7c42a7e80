"""The refunds list: every reversal, read-only, with "send again" for a failed or rejected one."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import queueing, reversal_lifecycle
from ..models import AccountState, Reversal, ReversalStatus
from . import display, row_actions
from .filters import AccountFilter, _exact
from .read_only import ReadOnlyAdmin

RESENDABLE = (ReversalStatus.FAILED, ReversalStatus.REJECTED)
REVERSE_PERM = "django_points_earn.reverse_earningrecord"


class SourceFilter(admin.SimpleListFilter):
    title = gettext_lazy("source")
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        return [("shop", gettext_lazy("the shop")), ("platform", gettext_lazy("the platform"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return _exact(queryset, "source", self.value())


class EarningAccountFilter(AccountFilter):
    """The account of the refunded earning."""

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        return _exact(queryset, "record__account", self.value())


def cannot_send_again(reversal: Reversal) -> str:
    """Why this refund cannot be sent again ("" if it can)."""
    if reversal.status not in RESENDABLE:
        return _("only failed or rejected refunds can be sent again")
    if reversal.status == ReversalStatus.REJECTED and not reversal.attempt_set.exists():
        # Refused by this app's own rules (amount, platform capability): a resend would be refused the same way.
        return _("refused before anything was sent: %(why)s") % {
            "why": display.one_line(display.shown(reversal.status_reason))
        }
    return ""


class ReversalAdmin(ReadOnlyAdmin):
    list_display = (
        "earning_link",
        "refund_id",
        "source_label",
        "amount",
        "points",
        "state_badge",
        "reason_shown",
        "attempts",
        "created_at",
        "completed_at",
    )
    list_display_links = ("refund_id",)
    list_select_related = ("record",)
    list_filter = ("status", SourceFilter, EarningAccountFilter)
    search_fields = ("=refund_id",)  # the real search is get_search_results: exact, indexed
    search_help_text = gettext_lazy("Order number or refund reference, exactly.")
    ordering = ("-id",)
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    exact_search = ("record__order_number", "refund_id")
    actions = ["send_again_selected"]
    fields = readonly_fields = (
        "earning_link",
        "refund_id",
        "source_label",
        "amount",
        "points",
        "state_badge",
        "why_shown",
        "reason_shown",
        "attempts",
        "outcome_unknown",
        "next_attempt_at",
        "remote_reference",
        "response_shown",
        "history_shown",
        "created_at",
        "completed_at",
    )

    def has_reverse_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REVERSE_PERM) and self.has_view_permission(request)

    @admin.display(description=gettext_lazy("order number"), ordering="record__order_number")
    def earning_link(self, obj: Reversal) -> SafeString:
        url = reverse("admin:django_points_earn_earningrecord_change", args=[obj.record_id])
        return format_html('<a class="pe-ltr" href="{}">{}</a>', url, obj.record.order_number)

    @admin.display(description=gettext_lazy("source"), ordering="source")
    def source_label(self, obj: Reversal) -> str:
        return {"shop": _("the shop"), "platform": _("the platform")}.get(obj.source, obj.source)

    @admin.display(description=gettext_lazy("state"), ordering="status")
    def state_badge(self, obj: Reversal) -> SafeString:
        return display.badge(obj)

    @admin.display(description=gettext_lazy("reason"))
    def reason_shown(self, obj: Reversal) -> str:
        return display.one_line(display.shown(obj.reason))

    @admin.display(description=gettext_lazy("why"))
    def why_shown(self, obj: Reversal) -> str:
        return display.shown(obj.status_reason)

    @admin.display(description=gettext_lazy("last platform answer"))
    def response_shown(self, obj: Reversal) -> SafeString | str:
        text = display.pretty_json(obj.response)
        return format_html('<pre class="pe-json">{}</pre>', text) if text else "—"

    @admin.display(description=gettext_lazy("history"))
    def history_shown(self, obj: Reversal) -> SafeString | str:
        """This refund's state changes (they are also on its earning's timeline, among the earning's own)."""
        events = list(obj.event_set.order_by("at", "id"))
        if not events:
            return "—"
        labels = dict(ReversalStatus.choices)
        rows = format_html_join(
            "",
            '<li><span class="pe-ltr">{}</span> {} → {} ({}{}): {}</li>',
            (
                (
                    date_format(timezone.localtime(e.at), "SHORT_DATETIME_FORMAT"),
                    labels.get(e.from_status, e.from_status or "∅"),
                    labels.get(e.to_status, e.to_status),
                    e.get_trigger_display(),
                    f", {e.actor}" if e.actor else "",
                    display.shown(e.note),
                )
                for e in events
            ),
        )
        return format_html('<ul class="pe-history">{}</ul>', rows)

    @admin.action(description=gettext_lazy("Send the refund again"), permissions=["reverse"])
    def send_again_selected(self, request: HttpRequest, queryset: QuerySet[Reversal]) -> HttpResponse | None:
        def run(chosen: list[Reversal]) -> None:
            actor = request.user.get_username()
            done = [
                r
                for r in chosen
                if reversal_lifecycle.requeue(r, actor=actor, note=f"sent again from the admin by {actor}")
            ]
            if done:
                self.message_user(request, _("Refunds queued to be sent again: %(count)d.") % {"count": len(done)})
            if len(done) < len(chosen):
                self.message_user(
                    request,
                    _("Not changed (another agent or a worker got there first): %(count)d.")
                    % {"count": len(chosen) - len(done)},
                    messages.WARNING,
                )
            accounts = sorted({r.record.account for r in done})
            paused = set(
                AccountState.objects.filter(account__in=accounts, paused=True).values_list("account", flat=True)
            )
            for account in sorted(set(accounts) - set(paused)):  # a paused account's refunds wait for its resume
                queueing.request_drain_safely(account)

        return row_actions.confirm_or_run(
            self,
            request,
            queryset.select_related("record"),
            action="send_again_selected",
            title=gettext_lazy("Send the refund again"),
            explanation=gettext_lazy(
                "Failed refunds, and refunds the platform rejected, go back to the queue with a fresh set of "
                "attempts. A refund is sent with the same reference, so the platform never takes points back twice."
            ),
            headers=[gettext_lazy("Order number"), gettext_lazy("Refund reference"), gettext_lazy("State")],
            cells=lambda r: [r.record.order_number, r.refund_id, display.badge(r)],
            refusal=cannot_send_again,
            run=run,
        )
