"""``EarningForOrderMixin``: the loyalty earning of each order, read only, in the shop's own Order admin.

::

    from django_points_earn.admin_tools import EarningForOrderMixin

    @admin.register(Order)
    class OrderAdmin(EarningForOrderMixin, admin.ModelAdmin):
        list_display = ["number", "customer", "total"]

The list gets three columns (the earning's state, linked to its earning page, with the date a held one is sent; its
points; its attempts) and the
order's page a read-only "Loyalty points" field. Orders are matched to their earning through the shop's adapter
(account and order number, as at checkout), for a whole list page in one query, not one per row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..adapters import get_adapter
from ..api import earning_rows, order_key
from ..models import Status
from .display import BADGE_COLOURS

CACHE = "_points_earning_row"  # the earning's row, kept on each order object of the page
COLUMNS = ("points_earning", "points_earning_points", "points_earning_attempts")
FIELD = "points_earning_summary"
EMPTY = "—"


def attach_earnings(orders: list[Any]) -> None:
    """Read the earnings of ``orders`` in one query and keep each on its order (``None``: it has none)."""
    adapter = get_adapter()
    keys = [order_key(order, adapter) for order in orders]
    rows = earning_rows(keys)
    for order, key in zip(orders, keys, strict=True):
        setattr(order, CACHE, rows.get(key) if key else None)


def earning_row(order: Any) -> dict[str, Any] | None:
    """The order's earning row: the one its list page read, or (the order's own page) read now."""
    if not hasattr(order, CACHE):
        attach_earnings([order])
    return getattr(order, CACHE)


class EarningForOrderMixin:
    """Put it before ``admin.ModelAdmin`` in the shop's Order admin. ``points_earning_columns`` (the list's
    columns) and ``points_earning_field`` (the order page's field) may be set to ``()`` / ``False`` to leave one
    out, or the columns named in ``list_display`` to place them."""

    points_earning_columns: tuple[str, ...] = COLUMNS
    points_earning_field: bool = True

    # -- where they go ---------------------------------------------------------------------------------------
    def get_list_display(self, request: HttpRequest) -> Any:
        shown = list(super().get_list_display(request))  # type: ignore[misc]
        return shown + [c for c in self.points_earning_columns if c not in shown]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if self.points_earning_field and obj is not None and FIELD not in fields:
            fields.append(FIELD)
        return fields

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        if not self.points_earning_field or obj is None:
            return fieldsets
        named = {f for _, options in fieldsets for f in _flat(options.get("fields", ()))}
        if FIELD in named:
            return fieldsets
        if getattr(self, "fieldsets", None):  # the shop's own sections: ours after them
            return [*fieldsets, (_("Loyalty points"), {"fields": [FIELD]})]
        return fieldsets  # Django's one section lists the read-only fields, ours included

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type:
        base = super().get_changelist(request, **kwargs)  # type: ignore[misc]

        class EarningChangeList(base):  # type: ignore[misc, valid-type]
            def get_results(self, request: HttpRequest) -> None:
                super().get_results(request)
                attach_earnings(list(self.result_list))  # one query for the page's orders

        return EarningChangeList

    # -- what they show --------------------------------------------------------------------------------------
    @admin.display(description=_("loyalty points"))
    def points_earning(self, order: Any) -> SafeString | str:
        row = earning_row(order)
        if row is None:
            return EMPTY
        return _linked(row, _badge(row["status"], row.get("send_after")))

    @admin.display(description=_("points"))
    def points_earning_points(self, order: Any) -> str:
        row = earning_row(order)
        return EMPTY if row is None or row["points"] is None else f"{row['points']:.2f}".rstrip("0").rstrip(".")

    @admin.display(description=_("attempts"))
    def points_earning_attempts(self, order: Any) -> int | str:
        row = earning_row(order)
        return EMPTY if row is None else row["attempts"]

    @admin.display(description=_("loyalty points"))
    def points_earning_summary(self, order: Any) -> SafeString | str:
        row = earning_row(order)
        if row is None:
            return _("No earning recorded for this order.")
        points = self.points_earning_points(order)
        return format_html(
            "{} · {} {} · {} {} · {}",
            _badge(row["status"], row.get("send_after")),
            points,
            _("points"),
            row["attempts"],
            _("attempts"),
            _linked(row, _("open the earning")),
        )


def _badge(status: str, send_after: datetime | None = None) -> SafeString:
    label = Status(status).label if status in Status.values else status
    badge = format_html(
        '<span class="pe-badge" data-state="{}" style="background:{};color:#fff;padding:1px 6px;border-radius:8px">'
        "{}</span>",
        status,
        BADGE_COLOURS.get(status, "#5c636a"),
        label,
    )
    if status != Status.HELD or send_after is None:
        return badge
    return format_html("{} {}", badge, date_format(timezone.localtime(send_after), "SHORT_DATETIME_FORMAT"))


def _linked(row: dict[str, Any], text: Any) -> SafeString | str:
    try:
        url = reverse("admin:django_points_earn_earningrecord_change", args=[row["id"]])
    except NoReverseMatch:  # the earnings admin is not on this site
        return text
    return format_html('<a href="{}">{}</a>', url, text)


def _flat(fields: Any) -> list[str]:
    out: list[str] = []
    for field in fields:
        out.extend(_flat(field) if isinstance(field, list | tuple) else [field])
    return out
