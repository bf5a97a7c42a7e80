"""A confirmation page for the refund and webhook lists' actions: what will be touched, then "Yes, I'm sure"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.contrib.admin import helpers
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.functional import Promise

TEMPLATE = "admin/django_points_earn/confirm_rows.html"
MAX_ROWS = 100


def confirm_or_run(
    model_admin: Any,
    request: HttpRequest,
    queryset: Any,
    *,
    action: str,
    title: Promise,
    explanation: Promise,
    headers: Sequence[Promise],
    cells: Callable[[Any], Sequence[Any]],
    refusal: Callable[[Any], str],
    run: Callable[[list[Any]], None],
) -> TemplateResponse | None:
    """First POST (from the list's menu): the page listing the selected rows, each with why it is left alone if it
    is. POST with ``confirm=yes``: ``run`` on the rows that apply and ``None`` (the list is shown again)."""
    selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
    if selected and request.POST.get("select_across") != "1":
        queryset = model_admin.get_queryset(request).filter(pk__in=selected)  # by id, not through the filters
    objects = list(queryset.order_by("id")[: MAX_ROWS + 1])
    too_many = len(objects) > MAX_ROWS
    rows = [{"obj": o, "cells": cells(o), "refusal": refusal(o)} for o in objects[:MAX_ROWS]]
    applicable = [row["obj"] for row in rows if not row["refusal"]]
    if request.POST.get("confirm") == "yes" and not too_many:
        run(applicable)
        return None
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": title,
        "explanation": explanation,
        "headers": headers,
        "rows": rows,
        "applicable": len(applicable),
        "too_many": too_many,
        "max_rows": MAX_ROWS,
        "hidden": [("action", action)] + [(helpers.ACTION_CHECKBOX_NAME, str(o.pk)) for o in objects],
        "back_url": request.get_full_path(),
    }
    return TemplateResponse(request, TEMPLATE, context)
