"""The earning actions as the admin offers them: each behind a permission and a confirmation page, from the
list (bulk) and from buttons on the earning page. The effects live in :mod:`.operations`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.admin import helpers
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import corrections
from ..earning_request import InvalidEarningRequest
from ..models import EarningRecord
from . import operations
from .display import badge, last_error
from .forms import CorrectForm, ExtendHoldForm, ResolveForm, ReverseForm

# A bulk action handles at most this many earnings per confirmation (the page shows them all).
MAX_BULK = 100
CONFIRM_TEMPLATE = "admin/django_points_earn/confirm_action.html"
REFUSED_TEMPLATE = "admin/django_points_earn/refused.html"


@dataclass(frozen=True)
class ActionSpec:
    name: str  # URL segment of the button and suffix of the bulk action (``retry`` -> ``retry_selected``)
    permission: str  # codename of the permission on EarningRecord
    title: Promise
    question: Promise
    explanation: Promise
    done: Promise  # "%(count)d"
    states: tuple[str, ...]
    run: Callable[..., operations.Report]
    form_class: type[forms.Form] | None = None
    single: bool = False  # only one earning at a time (its own data is edited)
    # Why this action cannot apply to an earning in one of ``states`` ("" if it can), shown on the confirmation.
    refusal: Callable[[EarningRecord], str] | None = None

    def applies(self, record: EarningRecord) -> bool:
        return (not self.states or record.status in self.states) and not (self.refusal and self.refusal(record))

    @property
    def perm(self) -> str:
        return f"django_points_earn.{self.permission}"

    def allowed(self, request: HttpRequest) -> bool:
        return request.user.has_perm(self.perm)


def _retry(records: Sequence[EarningRecord], actor: str, form: Any) -> operations.Report:
    return operations.retry(records, actor=actor)


def _verify(records: Sequence[EarningRecord], actor: str, form: Any) -> operations.Report:
    return operations.verify_with_platform(records, actor=actor)


def _resolve(records: Sequence[EarningRecord], actor: str, form: ResolveForm) -> operations.Report:
    return operations.resolve(records, actor=actor, note=form.cleaned_data["note"])


def _correct(records: Sequence[EarningRecord], actor: str, form: CorrectForm) -> operations.Report:
    return operations.correct(records[0], form.changes(), actor=actor)


def _send_now(records: Sequence[EarningRecord], actor: str, form: Any) -> operations.Report:
    return operations.send_now(records, actor=actor)


def _extend_hold(records: Sequence[EarningRecord], actor: str, form: ExtendHoldForm) -> operations.Report:
    return operations.extend_hold(records, actor=actor, days=form.cleaned_data["days"])


def _reverse(records: Sequence[EarningRecord], actor: str, form: ReverseForm) -> operations.Report:
    data = form.cleaned_data
    return operations.reverse(
        records[0], amount=data["amount"], reason=data["reason"], refund_id=data["refund_id"], actor=actor
    )


SPECS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
            name="retry",
            permission="retry_earningrecord",
            title=gettext_lazy("Send again now"),
            question=gettext_lazy("Send these earnings to the platform again now?"),
            explanation=gettext_lazy(
                "Rejected, blocked and failed earnings go back to the queue with a fresh set of attempts and are "
                "sent with the same order number, so the platform can never award an order twice."
            ),
            done=gettext_lazy("Queued to be sent again: %(count)d."),
            states=operations.RETRYABLE,
            run=_retry,
            refusal=corrections.cannot_resend,
        ),
        ActionSpec(
            name="verify",
            permission="verify_earningrecord",
            title=gettext_lazy("Verify with the platform"),
            question=gettext_lazy("Look these earnings up on the platform?"),
            explanation=gettext_lazy(
                "Asks the platform what it holds for each earning and records any difference on the earning. "
                "Nothing is changed on either side."
            ),
            done=gettext_lazy("Checked with the platform: %(count)d."),
            states=(),
            run=_verify,
        ),
        ActionSpec(
            name="resolve",
            permission="resolve_earningrecord",
            title=gettext_lazy("Mark resolved"),
            question=gettext_lazy("Mark these earnings as resolved by hand?"),
            explanation=gettext_lazy(
                "Use this when the earning was settled outside this app (e.g. points given in the platform's "
                "dashboard). It will not be sent again. Your note and your name are kept in its history."
            ),
            done=gettext_lazy("Marked resolved: %(count)d."),
            states=operations.RESOLVABLE,
            run=_resolve,
            form_class=ResolveForm,
        ),
        ActionSpec(
            name="correct",
            permission="correct_earningrecord",
            title=gettext_lazy("Correct customer details and send again"),
            question=gettext_lazy("Correct this rejected earning and send it again?"),
            explanation=gettext_lazy(
                "The corrected details replace the ones the order was rejected for, the request is rebuilt and "
                "sent again. The history keeps who changed what."
            ),
            done=gettext_lazy("Corrected and queued to be sent again: %(count)d."),
            states=operations.CORRECTABLE,
            run=_correct,
            form_class=CorrectForm,
            single=True,
        ),
        ActionSpec(
            name="send_now",
            permission="hold_earningrecord",
            title=gettext_lazy("Send now (end the hold)"),
            question=gettext_lazy("Send these held earnings now, before their return window closes?"),
            explanation=gettext_lazy(
                "They go to the queue at once. A refund after this takes the points back from the platform "
                "instead of lowering what is sent. Your name is kept in their history."
            ),
            done=gettext_lazy("Queued to be sent now: %(count)d."),
            states=operations.HELD,
            run=_send_now,
        ),
        ActionSpec(
            name="extend_hold",
            permission="hold_earningrecord",
            title=gettext_lazy("Hold longer"),
            question=gettext_lazy("Hold these earnings longer?"),
            explanation=gettext_lazy(
                "Nothing is sent until the new date; a refund meanwhile still cancels or lowers the earning. "
                "Your name and the new date are kept in their history."
            ),
            done=gettext_lazy("Held longer: %(count)d."),
            states=operations.HELD,
            run=_extend_hold,
            form_class=ExtendHoldForm,
        ),
        ActionSpec(
            name="reverse",
            permission="reverse_earningrecord",
            title=gettext_lazy("Take points back (refund)"),
            question=gettext_lazy("Take points back for a refund of this order?"),
            explanation=gettext_lazy(
                "For a refund the shop did not report itself. The platform takes back all the points, or the share "
                "of the amount you enter; several partial refunds can never take back more than was earned."
            ),
            done=gettext_lazy("Refund recorded, points to be taken back: %(count)d."),
            states=operations.REVERSIBLE,
            run=_reverse,
            form_class=ReverseForm,
            single=True,
        ),
    )
}


def refused(request: HttpRequest, admin_context: dict[str, Any], spec: ActionSpec) -> TemplateResponse:
    """The page a staff member without the permission gets: what they tried, which permission it needs."""
    context = {**admin_context, "title": _("Not allowed"), "action_title": spec.title, "perm": spec.perm}
    return TemplateResponse(request, REFUSED_TEMPLATE, context, status=403)


def confirm_or_run(
    request: HttpRequest,
    spec: ActionSpec,
    records: list[EarningRecord],
    *,
    admin_context: dict[str, Any],
    hidden: list[tuple[str, str]],
    back_url: str,
) -> TemplateResponse | None:
    """GET (or the first POST from the list's action menu): the confirmation page. POST with ``confirm=yes`` and a
    valid form: do it, leave messages, return ``None`` (the caller redirects)."""
    confirmed = request.method == "POST" and request.POST.get("confirm") == "yes"
    form = None
    if spec.form_class is not None:
        form = spec.form_class(request.POST if confirmed else None)
    too_many = len(records) > MAX_BULK
    single_refused = spec.single and len(records) != 1
    if confirmed and not too_many and not single_refused and (form is None or form.is_valid()):
        try:
            report = spec.run(records, request.user.get_username(), form)
        except InvalidEarningRequest as exc:
            form.add_error("phone" if exc.field == "phone" else None, str(exc))
        else:
            tell(request, spec, report)
            return None
    rows = [
        {
            "record": r,
            "badge": badge(r),
            "reason": (spec.refusal and spec.refusal(r)) or last_error(r),
            "applies": spec.applies(r),
        }
        for r in records[:MAX_BULK]
    ]
    context = {
        **admin_context,
        "title": spec.title,
        "spec": spec,
        "rows": rows,
        "applicable": sum(1 for row in rows if row["applies"]),
        "form": form,
        "hidden": hidden,
        "back_url": back_url,
        "too_many": too_many,
        "single_refused": single_refused,
        "max_bulk": MAX_BULK,
        "checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, CONFIRM_TEMPLATE, context)


def tell(request: HttpRequest, spec: ActionSpec, report: operations.Report) -> None:
    if report.done:
        messages.success(request, spec.done % {"count": len(report.done)})
    for note in report.notes:
        messages.info(request, note)
    for record, why in report.refused[:10]:
        messages.warning(request, _("%(order)s not changed: %(why)s") % {"order": record.order_number, "why": why})
    if len(report.refused) > 10:
        messages.warning(request, _("…and %(n)d more not changed.") % {"n": len(report.refused) - 10})


def bulk_action(spec: ActionSpec) -> Callable[[Any, HttpRequest, Any], HttpResponse | None]:
    """The list's action for ``spec`` (registered as ``<name>_selected``, shown only with the permission)."""

    def action(model_admin: Any, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if selected and request.POST.get("select_across") != "1":
            # By id, not through the list's filters: a record that left the filtered view since the page was
            # loaded (e.g. retried by someone else) is still shown, with its new state.
            queryset = model_admin.get_queryset(request).filter(pk__in=selected)
        records = list(queryset.order_by("id")[: MAX_BULK + 1])
        hidden = [("action", f"{spec.name}_selected")] + [(helpers.ACTION_CHECKBOX_NAME, str(r.pk)) for r in records]
        return confirm_or_run(
            request,
            spec,
            records,
            admin_context={**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta},
            hidden=hidden,
            back_url=request.get_full_path(),
        )

    action.__name__ = f"{spec.name}_selected"
    action.allowed_permissions = (spec.name,)
    action.short_description = spec.title
    return action
