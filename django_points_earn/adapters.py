"""How the app reads a shop's order: :class:`OrderAdapter`, the declarative :class:`FieldsAdapter` and
:func:`get_adapter`. What they build, the provider-neutral :class:`EarningRequest`, is :mod:`.earning_request`'s.

A shop subclasses :class:`OrderAdapter`, implements the few ``get_*`` methods for its own order model and names the
class in ``POINTS_EARN["ORDER_ADAPTER"]``. Everything the platforms need is read through it, once, inside the
shop's transaction, and frozen on the :class:`~django_points_earn.models.EarningRecord`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import prefetch_related_objects
from django.utils.module_loading import import_string

from .conf import get_settings, setting_path

# A shop's adapter builds these (``from django_points_earn.adapters import Line, OrderAdapter``): they stay importable
# from here, where the docs and shops have always found them.
from .earning_request import Address, EarningRequest, InvalidEarningRequest, Line, to_money
from .review_adapter import ReviewMethods

__all__ = [
    "ORDER_FIELD_KEYS",
    "REQUIRED_ORDER_FIELDS",
    "Address",
    "EarningRequest",
    "FieldsAdapter",
    "InvalidEarningRequest",
    "Line",
    "OrderAdapter",
    "get_adapter",
    "read_path",
]

# OrderAdapter.get_send_after's default answer: the account's HOLD setting decides (none: send at once).
ACCOUNT_HOLD = object()


@dataclass
class OrderAdapter(ReviewMethods):
    """Reads the shop's order (and, for Points' rating channels, its approved reviews: :class:`ReviewMethods`).
    Override the ``get_*`` methods; the defaults return "not given"."""

    options: dict[str, Any] = field(default_factory=dict)

    # -- required -------------------------------------------------------------------------------------------
    def get_order_number(self, order: Any) -> str:
        """The order number the platform sees: unique per account and stable forever (the idempotency key)."""
        raise NotImplementedError("OrderAdapter.get_order_number() must be implemented")

    def get_phone(self, order: Any) -> str | None:
        raise NotImplementedError("OrderAdapter.get_phone() must be implemented")

    def get_total(self, order: Any) -> Decimal:
        raise NotImplementedError("OrderAdapter.get_total() must be implemented")

    def get_lines(self, order: Any) -> Iterable[Line]:
        raise NotImplementedError("OrderAdapter.get_lines() must be implemented")

    # -- optional -------------------------------------------------------------------------------------------
    def get_account(self, order: Any) -> str:
        """Which ``POINTS_EARN["ACCOUNTS"]`` entry this order earns on. Default: the only (or first) one."""
        names = get_settings().account_names
        if not names:
            raise ImproperlyConfigured(f"{setting_path('ACCOUNTS')} is empty.")
        return names[0]

    def get_skip_reason(self, order: Any) -> str | None:
        """Return a reason to award nothing (e.g. "customer opted out"); ``None`` means eligible."""
        return None

    def get_customer_name(self, order: Any) -> str | None:
        return None

    def get_shipping_amount(self, order: Any) -> Decimal | None:
        return None

    def get_tax_amount(self, order: Any) -> Decimal | None:
        return None

    def get_discount_amount(self, order: Any) -> Decimal | None:
        return None

    def get_shipping_address(self, order: Any) -> Address | None:
        return None

    def get_metadata(self, order: Any) -> dict[str, Any] | None:
        return None

    def get_profile_id(self, order: Any) -> str | None:
        return None

    def get_paid_at(self, order: Any) -> datetime | None:
        return None

    def get_order_id(self, order: Any) -> str:
        return str(getattr(order, "pk", "") or "")

    def get_send_after(self, order: Any) -> datetime | object | None:
        """When this order's earning may be sent (e.g. its delivery date plus the return window): a datetime holds
        it until then, ``None`` sends it now. The default, :data:`ACCOUNT_HOLD`, applies the account's HOLD."""
        return ACCOUNT_HOLD

    def paid_orders_since(self, since: datetime) -> Iterable[Any]:
        """For backfill by ``points_reconcile``: the shop's orders paid since ``since``. Optional."""
        raise NotImplementedError

    # -- assembled ------------------------------------------------------------------------------------------
    def build_request(self, order: Any) -> EarningRequest:
        return EarningRequest(
            account=self.get_account(order),
            order_number=str(self.get_order_number(order) or "").strip(),
            phone=self.get_phone(order),
            total=self.get_total(order),
            # One line over the limit is enough to refuse the order: a runaway generator is not read to its end.
            lines=list(islice(self.get_lines(order) or [], int(get_settings().limits["MAX_LINES"]) + 1)),
            customer_name=self.get_customer_name(order),
            shipping_amount=self.get_shipping_amount(order),
            tax_amount=self.get_tax_amount(order),
            discount_amount=self.get_discount_amount(order),
            shipping_address=self.get_shipping_address(order),
            metadata=self.get_metadata(order),
            profile_id=self.get_profile_id(order),
            paid_at=self.get_paid_at(order),
            order_id=self.get_order_id(order),
        )


# ORDER_FIELDS: key -> (what it is, its default path or None). Lines' paths are read from each line.
ORDER_FIELD_KEYS: dict[str, tuple[str, str | None]] = {
    "number": ("the order number (unique and stable forever: the idempotency key); required", None),
    "phone": ("the customer's mobile, in any Saudi form; required", None),
    "total": ("what the customer paid; required", None),
    "lines": ("the order's lines (a related manager, a list or a method); without it one line carries the total", None),
    "line_name": ("a line's product name", "name"),
    "line_unit_price": ("a line's unit price, without tax", "unit_price"),
    "line_quantity": ("a line's quantity", "quantity"),
    "line_sku": ("a line's SKU", None),
    "line_category": ("a line's category", None),
    "customer_name": ("the customer's name", None),
    "shipping": ("the shipping amount", None),
    "tax": ("the tax amount", None),
    "discount": ("the discount amount", None),
    "account": ("the name of the POINTS_EARN account the order earns on (default: the first)", None),
    "profile_id": ("the customer's fabric profileId", None),
    "paid_at": ("when the order was paid", None),
}
REQUIRED_ORDER_FIELDS = ("number", "phone", "total")


def read_path(obj: Any, path: str) -> Any:
    """Follow a dotted path (``customer.phone``) through attributes and dict keys; a method on the way is called,
    a related manager at the end gives its rows. ``None`` anywhere gives ``None``."""
    for part in path.split("."):
        if obj is None:
            return None
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part)
        if hasattr(obj, "get_queryset") and hasattr(obj, "all"):
            obj = list(obj.all())  # a related manager (prefetched by FieldsAdapter.build_request)
        elif callable(obj):
            obj = obj()
    return obj


class FieldsAdapter(OrderAdapter):
    """The declarative adapter: reads the order where ``POINTS_EARN["ORDER_FIELDS"]`` says, so a typical shop
    writes settings instead of a class. Subclass it (and name it in ``ORDER_ADAPTER``) to add what settings cannot
    say, e.g. ``get_account`` from a brand or ``get_skip_reason``."""

    def field_paths(self) -> dict[str, str]:
        configured = get_settings().order_fields or {}
        defaults = {key: default for key, (_, default) in ORDER_FIELD_KEYS.items() if default}
        return {**defaults, **{k: v for k, v in configured.items() if v}}

    def read(self, order: Any, key: str) -> Any:
        path = self.field_paths().get(key)
        return read_path(order, path) if path else None

    def build_request(self, order: Any) -> EarningRequest:
        paths = self.field_paths()
        if paths.get("lines"):
            lines = paths["lines"].replace(".", "__")
            related = {p.rsplit(".", 1)[0] for k, p in paths.items() if k.startswith("line_") and "." in p}
            try:  # the lines (and what their fields go through) in one query each, read once
                prefetch_related_objects([order], lines, *(f"{lines}__{r.replace('.', '__')}" for r in related))
            except (AttributeError, ValueError):
                pass  # not a relation (a list, a method): read as it is
        return super().build_request(order)

    def get_order_number(self, order: Any) -> str:
        return self.read(order, "number")

    def get_phone(self, order: Any) -> str | None:
        return self.read(order, "phone")

    def get_total(self, order: Any) -> Decimal:
        return self.read(order, "total")

    def get_lines(self, order: Any) -> Iterable[Line]:
        paths = self.field_paths()
        if not paths.get("lines"):
            total = to_money(self.get_total(order), "total")
            extra = [
                to_money(v or 0, k)
                for k, v in (("shipping", self.get_shipping_amount(order)), ("tax", self.get_tax_amount(order)))
            ]
            discount = to_money(self.get_discount_amount(order) or 0, "discount")
            name = f"Order {self.get_order_number(order)}"
            return [Line(name=name, unit_price=total - sum(extra) + discount, quantity=1)]
        return [
            Line(
                name=read_path(line, paths["line_name"]),
                unit_price=read_path(line, paths["line_unit_price"]),
                quantity=read_path(line, paths["line_quantity"]),
                sku=read_path(line, paths["line_sku"]) if paths.get("line_sku") else None,
                category=read_path(line, paths["line_category"]) if paths.get("line_category") else None,
            )
            for line in read_path(order, paths["lines"]) or []
        ]

    def get_account(self, order: Any) -> str:
        return self.read(order, "account") or super().get_account(order)

    def get_customer_name(self, order: Any) -> str | None:
        return self.read(order, "customer_name")

    def get_shipping_amount(self, order: Any) -> Decimal | None:
        return self.read(order, "shipping")

    def get_tax_amount(self, order: Any) -> Decimal | None:
        return self.read(order, "tax")

    def get_discount_amount(self, order: Any) -> Decimal | None:
        return self.read(order, "discount")

    def get_profile_id(self, order: Any) -> str | None:
        return self.read(order, "profile_id")

    def get_paid_at(self, order: Any) -> datetime | None:
        return self.read(order, "paid_at")


def get_adapter() -> OrderAdapter:
    settings = get_settings()
    path = settings.order_adapter
    if not path and settings.order_fields:
        return FieldsAdapter()
    if not path:
        raise ImproperlyConfigured(
            f"{setting_path('ORDER_ADAPTER')} is missing: the dotted path of your adapter (or set ORDER_FIELDS)."
        )
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{setting_path('ORDER_ADAPTER')} = {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, OrderAdapter)):
        raise ImproperlyConfigured(f"{setting_path('ORDER_ADAPTER')} = {path!r} is not an OrderAdapter subclass.")
    return cls()
