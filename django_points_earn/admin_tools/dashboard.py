"""The reconciliation dashboard: an admin page of its own (a proxy model gives it its place in the app index)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import translation
from django.utils.translation import gettext as _

from .. import merchant_alerts, reconcile
from ..models import AccountState, Trigger
from . import operations, stats
from .chart import hourly_bars
from .display import age, badge, last_error

VIEW_PERM = "django_points_earn.view_earningrecord"
RETRY_PERM = "django_points_earn.retry_earningrecord"
RESUME_PERM = "django_points_earn.resume_accountstate"
RESOLVE_ALERT_PERM = "django_points_earn.resolve_merchantalert"


def balance_banner(request: HttpRequest) -> dict[str, Any]:
    """The balance banner's context: each account's latest unresolved alert, and whether the user may resolve it.
    Never fails the page it is on."""
    try:
        banner = merchant_alerts.banner_context()
    except Exception:
        return {}
    return {**banner, "can_resolve_alerts": request.user.has_perm(RESOLVE_ALERT_PERM)}


class DashboardAdmin(admin.ModelAdmin):
    """No list, no forms: ``changelist_view`` is the dashboard; ``reconcile/`` and ``resume/<account>/`` act."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_PERM) or request.user.has_perm("django_points_earn.change_earningrecord")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name="{}_{}_changelist".format(*info)),
            path("reconcile/", wrap(self.reconcile_view), name="{}_{}_reconcile".format(*info)),
            path("resume/<str:account>/", wrap(self.resume_view), name="{}_{}_resume".format(*info)),
            path(
                "resolve-alert/<str:account>/",
                wrap(self.resolve_alert_view),
                name="{}_{}_resolve_alert".format(*info),
            ),
        ]

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts, **extra}

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        data = stats.build()
        attention = [
            {"record": r, "badge": badge(r), "age": age(r.created_at, data.now), "reason": last_error(r)}
            for r in data.attention
        ]
        context = self._context(
            request,
            title=_("Reconciliation dashboard"),
            data=data,
            attention=attention,
            oldest_queued_age=age(data.oldest_queued, data.now) if data.oldest_queued else "",
            awarded_24h=sum(n for _, n in data.hourly),
            attention_limit=stats.ATTENTION_COUNT_LIMIT,
            chart=hourly_bars(
                data.hourly, rtl=translation.get_language_bidi(), title=_("Earnings awarded per hour, last 24 hours")
            ),
            can_reconcile=request.user.has_perm(RETRY_PERM),
            can_resume=request.user.has_perm(RESUME_PERM),
            earnings_url=reverse("admin:django_points_earn_earningrecord_changelist"),
            **balance_banner(request),
        )
        return TemplateResponse(request, "admin/django_points_earn/dashboard.html", context)

    def reconcile_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request) or not request.user.has_perm(RETRY_PERM):
            raise PermissionDenied
        options = reconcile.Options(trigger=Trigger.ADMIN, actor=request.user.get_username())
        try:
            report = reconcile.run(options)
        except reconcile.AlreadyRunning:
            messages.warning(request, _("A reconcile is already running; its results will show here shortly."))
        except Exception as exc:  # Redis down, typically: say so instead of a server error
            messages.error(request, _("Reconcile could not run: %(error)s") % {"error": f"{type(exc).__name__}"})
        else:
            steps = report.steps
            messages.success(
                request,
                _(
                    "Reconcile finished: %(recovered)d earnings recovered from stopped workers, work requested for "
                    "%(accounts)d accounts; %(attention)d earnings need a human."
                )
                % {
                    "recovered": steps.get("expired_leases", {}).get("recovered", 0),
                    "accounts": len(steps.get("lost_jobs", {}).get("accounts_enqueued", [])),
                    "attention": report.needs_attention_total,
                },
            )
        return HttpResponseRedirect(reverse("admin:django_points_earn_reconciliationdashboard_changelist"))

    def resume_view(self, request: HttpRequest, account: str) -> HttpResponse:
        if not self.has_view_permission(request):  # the confirmation shows the account's pause reason
            raise PermissionDenied
        if not request.user.has_perm(RESUME_PERM):
            context = self._context(request, title=_("Not allowed"), action_title=_("Resume"), perm=RESUME_PERM)
            return TemplateResponse(request, "admin/django_points_earn/refused.html", context, status=403)
        if "\x00" in account:  # no account has one, and PostgreSQL refuses to even look
            raise Http404
        state = get_object_or_404(AccountState, pk=account)
        back = reverse("admin:django_points_earn_reconciliationdashboard_changelist")
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            if not state.paused:
                messages.info(request, _("Account %(account)s is not paused.") % {"account": account})
            else:
                count = operations.resume(account, actor=request.user.get_username())
                messages.success(
                    request,
                    _("Account %(account)s resumed; earnings queued again: %(count)d.")
                    % {"account": account, "count": count},
                )
            return HttpResponseRedirect(back)
        context = self._context(request, title=_("Resume account %(account)s") % {"account": account}, state=state)
        context["back_url"] = back
        return TemplateResponse(request, "admin/django_points_earn/confirm_resume.html", context)

    def resolve_alert_view(self, request: HttpRequest, account: str) -> HttpResponse:
        """The banner's button: every unresolved balance alert of the account, resolved by this user (kept)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request) or not request.user.has_perm(RESOLVE_ALERT_PERM):
            raise PermissionDenied
        count = merchant_alerts.resolve(account, actor=request.user.get_username())
        if count:
            messages.success(
                request,
                _("Balance alerts of account %(account)s marked resolved: %(count)d.")
                % {"account": account, "count": count},
            )
        else:
            messages.info(request, _("Account %(account)s has no unresolved balance alert.") % {"account": account})
        return HttpResponseRedirect(reverse("admin:django_points_earn_reconciliationdashboard_changelist"))
