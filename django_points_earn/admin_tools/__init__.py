"""The merchant admin's building blocks: list filters, a paginator that does not count a million rows, display
helpers, the actions and their confirmation pages, and the reconciliation dashboard. ``admin.py`` wires them up.

For the shop's own Order admin: ``from django_points_earn.admin_tools import EarningForOrderMixin``
(:mod:`.order_mixin`)."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Imported when asked for, so importing a building block does not load the order mixin (and the reverse).
    if name == "EarningForOrderMixin":
        from .order_mixin import EarningForOrderMixin

        return EarningForOrderMixin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
