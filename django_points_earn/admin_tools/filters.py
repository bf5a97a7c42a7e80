"""List filters whose choices cost no query (accounts and platforms come from settings), and "needs attention"."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import BadRequest, ImproperlyConfigured
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import reconcile, reconcile_report
from ..conf import get_settings
from ..models import Status
from ..providers import label

ATTENTION = "yes"
STUCK = "stuck"


def stuck_q() -> Q:
    """Queued and overdue longer than reconcile's limit, or ``sending`` past its lease (its worker died)."""
    now = timezone.now()
    stale_after: timedelta = reconcile.Options().stale_after
    return Q(status=Status.QUEUED, next_attempt_at__lt=now - stale_after) | Q(
        status=Status.SENDING, lease_expires_at__lt=now
    )


class NeedsAttentionFilter(admin.SimpleListFilter):
    title = _("needs attention")
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            (ATTENTION, _("Needs attention (rejected, blocked, failed, stuck, drifted)")),
            (STUCK, _("Stuck (overdue or abandoned mid-call)")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        if self.value() == ATTENTION:
            return queryset & reconcile_report.attention_queryset()
        if self.value() == STUCK:
            return queryset.filter(stuck_q())
        return queryset


class HeldFilter(admin.SimpleListFilter):
    """Held earnings by when their hold ends (the return window)."""

    title = _("held until")
    parameter_name = "held"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("day", _("Released within 24 hours")),
            ("later", _("Released later")),
            ("delivery", _("Waiting for the delivery")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        held = queryset.filter(status=Status.HELD)
        soon = timezone.now() + timedelta(days=1)
        if self.value() == "day":
            return held.filter(send_after__lte=soon)
        if self.value() == "later":
            return held.filter(send_after__gt=soon)
        if self.value() == "delivery":
            return held.filter(send_after__isnull=True)
        return queryset


class AccountFilter(admin.SimpleListFilter):
    title = _("account")
    parameter_name = "account"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = list(get_settings().account_names)
        if self.value() and self.value() not in names:  # an account since removed from settings
            names.append(self.value())
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        return _exact(queryset, "account", self.value())


class PlatformFilter(admin.SimpleListFilter):
    title = _("platform")
    parameter_name = "platform"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        providers = set()
        for name in get_settings().account_names:
            try:
                providers.add(get_settings().account(name).provider)
            except ImproperlyConfigured:
                continue
        return [(p, label(p)) for p in sorted(providers)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        return _exact(queryset, "provider", self.value())


def _exact(queryset: QuerySet, field: str, value: str | None) -> QuerySet:
    """``field = value``; a value no column can hold (a NUL: PostgreSQL refuses it outright) matches nothing."""
    if not value:
        return queryset
    if "\x00" in value:
        return queryset.none()
    return queryset.filter(**{field: value})


def refuse_nul(request: HttpRequest) -> None:
    """A NUL in the query string (``?account=%00``) is never a real filter and PostgreSQL refuses it: 400."""
    if any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values):
        raise BadRequest("NUL character in the query string")
