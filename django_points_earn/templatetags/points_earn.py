"""``{% load points_earn %}{% points_for_order order %}``: an order's loyalty points, as its customer sees them.

Renders ``django_points_earn/points_for_order.html`` (override it in your templates to restyle it) with
``earning``, the summary of :func:`django_points_earn.api.earning_for`; ``points`` and ``taken_back``, its numbers
as the active language writes them (``points`` with "about" when it is an estimate); and ``held_until`` as a
datetime. Pass a summary instead of an order (from ``api.earnings_for`` on a list page) to render it without a
query.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django import template
from django.utils.formats import number_format
from django.utils.translation import gettext

from ..api import NONE, earning_for

register = template.Library()
log = logging.getLogger("django_points_earn")


@register.inclusion_tag("django_points_earn/points_for_order.html")
def points_for_order(order: Any) -> dict[str, Any]:
    if isinstance(order, dict) and "state" in order:
        earning = order
    else:
        try:
            earning = earning_for(order)
        except Exception:  # a customer's page renders without the points rather than fail
            log.exception("could not read the loyalty points of order %r", getattr(order, "pk", order))
            earning = {"state": NONE}
    held = earning.get("held_until")
    points = _shown(earning.get("points"))
    if points and earning.get("points_estimated"):
        points = gettext("about %(points)s") % {"points": points}
    return {
        "earning": earning,
        "points": points,
        "taken_back": _shown(earning.get("points_taken_back")),
        "held_until": datetime.fromisoformat(held) if held else None,
    }


def _shown(value: Any) -> str:
    """A number of points in the active language's way (grouped: 1,200), or "" for none."""
    if value is None:
        return ""
    return number_format(value, decimal_pos=None if isinstance(value, int) else 2, force_grouping=True)
