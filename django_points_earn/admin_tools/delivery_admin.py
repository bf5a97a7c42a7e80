"""The webhook deliveries list: every delivery that passed the secret check, read-only, with "apply again"."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import webhooks
from ..models import WebhookDelivery
from . import display, row_actions
from .filters import AccountFilter, _exact
from .read_only import ReadOnlyAdmin

REAPPLY_PERM = "django_points_earn.reapply_webhookdelivery"
KNOWN_EVENTS = ("approved", "refunded", "auto_refunded", "cancelled")  # the platform's names: not translated


class EventFilter(admin.SimpleListFilter):
    title = gettext_lazy("event")
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        events = list(KNOWN_EVENTS)
        if self.value() and self.value() not in events:  # an event the platform added since
            events.append(self.value())
        return [(e, e) for e in events]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return _exact(queryset, "event", self.value())


class ProcessedFilter(admin.SimpleListFilter):
    title = gettext_lazy("processed")
    parameter_name = "processed"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        return [("yes", gettext_lazy("Yes")), ("no", gettext_lazy("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(processed_at__isnull=self.value() == "no")
        return queryset


def reapply(delivery: WebhookDelivery) -> str:
    """Apply a stored delivery again (its earning may exist only now). Applying is idempotent: a delivery whose
    effect is already recorded changes nothing (a platform refund is keyed by the delivery, see ``webhooks``)."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(processed_at=None)
        return webhooks.process(delivery.pk)


class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "account", "event", "order_number", "processed", "result_line", "redeliveries")
    list_display_links = ("received_at",)
    list_filter = (EventFilter, AccountFilter, ProcessedFilter)
    search_fields = ("=order_number",)  # the real search is get_search_results: exact
    search_help_text = gettext_lazy("Order number or platform id, exactly.")
    ordering = ("-id",)
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    exact_search = ("order_number", "order_uuid")
    actions = ["apply_again_selected"]
    fields = readonly_fields = (
        "received_at",
        "account",
        "event",
        "order_number",
        "order_uuid",
        "redeliveries",
        "processed_at",
        "result_shown",
        "payload_shown",
    )

    def has_reapply_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REAPPLY_PERM) and self.has_view_permission(request)

    @admin.display(description=gettext_lazy("processed"), boolean=True, ordering="processed_at")
    def processed(self, obj: WebhookDelivery) -> bool:
        return obj.processed_at is not None

    @admin.display(description=gettext_lazy("result"))
    def result_line(self, obj: WebhookDelivery) -> SafeString | str:
        text = display.one_line(display.shown(obj.result))
        return format_html('<span class="pe-oneline" title="{}">{}</span>', text, text) if text else ""

    @admin.display(description=gettext_lazy("result"))
    def result_shown(self, obj: WebhookDelivery) -> str:
        return display.shown(obj.result)

    @admin.display(description=gettext_lazy("payload"))
    def payload_shown(self, obj: WebhookDelivery) -> SafeString | str:
        text = display.pretty_json(obj.payload)
        return format_html('<pre class="pe-json" id="pe-payload">{}</pre>', text) if text else "—"

    @admin.action(description=gettext_lazy("Apply again"), permissions=["reapply"])
    def apply_again_selected(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> HttpResponse | None:
        def run(chosen: list[WebhookDelivery]) -> None:
            results = [(d, reapply(d)) for d in chosen]
            self.message_user(request, _("Deliveries applied again: %(count)d.") % {"count": len(results)})
            for delivery, result in results[:10]:
                self.message_user(
                    request,
                    _("%(event)s %(order)s: %(result)s")
                    % {
                        "event": delivery.event,
                        "order": delivery.order_number or delivery.order_uuid,
                        "result": display.one_line(display.shown(result)),
                    },
                    messages.INFO,
                )

        return row_actions.confirm_or_run(
            self,
            request,
            queryset,
            action="apply_again_selected",
            title=gettext_lazy("Apply again"),
            explanation=gettext_lazy(
                "Each delivery is applied again as if it had just arrived, e.g. one that came before its earning "
                "existed. Applying is safe to repeat: what a delivery already did is not done twice."
            ),
            headers=[gettext_lazy("Received"), gettext_lazy("Event"), gettext_lazy("Order number")],
            cells=lambda d: [d.received_at, d.event, d.order_number or d.order_uuid],
            refusal=lambda d: "",
            run=run,
        )
