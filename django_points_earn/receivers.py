"""The ``order_paid`` receiver: the transactional outbox. Runs inside the shop's checkout; never raises.

The record is written in the shop's transaction (a rollback leaves nothing), and the drain job is enqueued only
after commit. Bad order data becomes a ``rejected`` record with the reason, so nothing is lost and checkout goes on.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DataError
from django.utils import timezone

from . import announce, earning_insert, holds
from .adapters import ACCOUNT_HOLD, get_adapter
from .conf import get_settings
from .earning_request import DROPPED, EarningRequest, InvalidEarningRequest, NothingToEarn, to_money
from .models import EarningRecord, Kind, Status
from .phones import mask_phone
from .providers import get_backend
from .receiving import call_safely, drain_after_commit, normalized_or_raw, provider_of

log = logging.getLogger("django_points_earn")


def on_order_paid(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """Signal receiver. Whatever happens here, the shop's checkout carries on."""
    if order is None:
        order = kwargs.get("instance")
    if order is None:
        log.error("order_paid was sent without an order (sender=%r); nothing recorded", sender)
        return
    try:
        record = record_paid_order(order)
    except Exception:
        log.exception("could not record the earning for order %r; checkout continues", getattr(order, "pk", order))
        return
    if record is not None and record.status == Status.QUEUED:
        drain_after_commit(record.account)


def record_paid_order(order: Any) -> EarningRecord | None:
    """Freeze the order's earning request as a record (queued, rejected or skipped). Idempotent per order."""
    adapter = get_adapter()
    settings = get_settings()
    order_id = call_safely(adapter.get_order_id, order) or ""
    status, reason, payload = Status.QUEUED, "", None
    try:
        request = adapter.build_request(order)
    except InvalidEarningRequest as exc:
        request, status, reason = None, Status.REJECTED, str(exc)
    except Exception as exc:  # the shop's adapter failed: keep the order visible, with the reason
        request, status = None, Status.REJECTED
        reason = f"the order adapter failed: {type(exc).__name__}: {exc}"
        log.exception("order adapter failed for order %s", order_id)

    if request is None:
        account = call_safely(adapter.get_account, order) or (settings.account_names or ["default"])[0]
        order_number = str(call_safely(adapter.get_order_number, order) or f"order-pk-{order_id}")
        request = EarningRequest(
            account=account, order_number=order_number, phone=None, total=None, lines=[], order_id=order_id
        )
    else:
        skip = call_safely(adapter.get_skip_reason, order)
        if skip:
            status, reason = Status.SKIPPED, str(skip)
        else:
            try:
                backend = get_backend(settings.account(request.account))
                payload = backend.build_payload(request)
            except NothingToEarn as exc:  # a valid order with nothing to earn: no call, and no human needed
                status, reason = Status.SKIPPED, str(exc)
            except InvalidEarningRequest as exc:
                status, reason = Status.REJECTED, str(exc)
                _drop_oversized(request, exc)
            except ImproperlyConfigured as exc:
                # Recorded as queued without a payload would be sent by nobody: reject with the config error.
                status, reason = Status.REJECTED, f"configuration error: {exc}"
            except Exception as exc:  # e.g. the adapter returned lines of the wrong type
                status, reason = Status.REJECTED, f"could not build the request: {type(exc).__name__}: {exc}"
                log.exception("could not build the earning request for order %s", order_id)

    send_after = None
    if status == Status.QUEUED:
        status, send_after, reason = _hold(adapter, order, request.account)
    phone = normalized_or_raw(request.phone)
    values: dict[str, Any] = {
        "send_after": send_after,
        "account": str(request.account)[:64],
        "provider": provider_of(request.account),
        "order_number": str(request.order_number)[:100],
        "order_id": str(order_id)[:64],
        "phone": phone[:32],
        "total": _money_or_none(request.total),
        "request": _request_json(request),
        "payload": payload,
    }
    try:
        record, created = earning_insert.create(status=status, reason=reason, **values)
    except DataError as exc:
        # A value the database cannot store (PostgreSQL: a NUL character, in a column or in the JSON). The order
        # must not be lost: keep it, rejected with the reason, every text made storable.
        status, reason = Status.REJECTED, f"the database refused the order's data: {str(exc).splitlines()[0]}"
        values = {**_storable(values), "payload": None}
        record, created = earning_insert.create(status=status, reason=reason, **values)
    if created:
        announce.earning_settled(record)  # rejected at checkout: the shop hears it needs a person
        level = logging.INFO if status == Status.QUEUED else logging.WARNING
        log.log(
            level,
            "earning %s/%s phone=%s recorded as %s%s",
            record.account,
            record.order_number,
            mask_phone(phone),
            status,
            f": {reason}" if reason else "",
        )
    return record


def _drop_oversized(request: EarningRequest, exc: InvalidEarningRequest) -> None:
    """An order refused for its size is not stored at that size: the reason says what was too large, the shop
    still has the order itself."""
    if exc.field == "metadata":
        request.metadata = {DROPPED: f"not stored: {exc}"}
    # Lines were read up to one over the limit (OrderAdapter.build_request): stored as read, so a correction
    # (which rebuilds the request from what is stored) is refused for the same reason, never sent cut short.


def _storable(value: Any) -> Any:
    """``value`` with every NUL character (which PostgreSQL stores in no text or JSON) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _hold(adapter: Any, order: Any, account: str) -> tuple[str, datetime | None, str]:
    """Queued now, or held (and until when): the adapter's ``get_send_after(order)``, else the account's HOLD. A
    hold that cannot be worked out sends now (logged; a bad HOLD setting is also a system check error)."""
    try:
        chosen = adapter.get_send_after(order)
    except Exception:
        log.exception("the order adapter's get_send_after failed; the account's hold applies")
        chosen = ACCOUNT_HOLD
    decides = chosen is not ACCOUNT_HOLD
    if decides and chosen is not None:
        if not isinstance(chosen, datetime):
            log.error("get_send_after returned %r, not a datetime or None; the account's hold applies", chosen)
            chosen, decides = None, False
        elif timezone.is_naive(chosen):
            chosen = timezone.make_aware(chosen)
    try:
        held, until = holds.initial_hold(account, chosen if decides else None, adapter_decides=decides)
    except ImproperlyConfigured as exc:
        log.error("earning not held: %s", exc)
        return Status.QUEUED, None, ""
    if not held:
        return Status.QUEUED, None, ""
    if until is None:
        return Status.HELD, None, "held until the order is delivered, then for the return window"
    return Status.HELD, until, f"held until {timezone.localtime(until):%Y-%m-%d %H:%M %Z} (return window)"


def on_order_delivered(sender: Any, order: Any = None, delivered_at: datetime | None = None, **kwargs: Any) -> None:
    """``order_delivered``: an earning held until delivery starts its hold's clock. Never raises."""
    if delivered_at is not None and not isinstance(delivered_at, datetime):
        log.error("order_delivered was sent with delivered_at=%r, not a datetime; the hold runs from now", delivered_at)
        delivered_at = None
    elif delivered_at is not None and timezone.is_naive(delivered_at):
        delivered_at = timezone.make_aware(delivered_at)  # the shop's time zone, as get_send_after's
    try:
        adapter = get_adapter()
        account, number = adapter.get_account(order), str(adapter.get_order_number(order) or "").strip()
        holds.start_clock(account, number, delivered_at)
    except Exception:
        log.exception("could not start the hold of order %r at its delivery", getattr(order, "pk", order))


def _money_or_none(value: Any) -> Decimal | None:
    try:
        return to_money(value, "total") if value is not None else None
    except InvalidEarningRequest:
        return None


def _request_json(request: EarningRequest) -> dict[str, Any]:
    """The neutral request as JSON; values that cannot be JSON (bad metadata) are kept as their repr."""
    data = request.to_json()
    if _jsonable(data):  # the usual case: one check of the whole
        return data
    return {k: (v if _jsonable(v) else repr(v)[:2000]) for k, v in data.items()}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def connect_receivers() -> None:
    """Listen to our ``order_paid`` and, if configured, to the shop's own signal."""
    from django.utils.module_loading import import_string

    from .rating_receivers import on_review_approved
    from .signals import order_delivered, order_paid, order_refunded, review_approved

    review_approved.connect(on_review_approved, dispatch_uid="django_points_earn.review_approved")
    order_paid.connect(on_order_paid, dispatch_uid="django_points_earn.order_paid")
    order_refunded.connect(on_order_refunded, dispatch_uid="django_points_earn.order_refunded")
    order_delivered.connect(on_order_delivered, dispatch_uid="django_points_earn.order_delivered")
    try:
        path = get_settings().order_paid_signal
    except ImproperlyConfigured:
        return  # reported by the system checks
    if path:
        try:
            import_string(path).connect(on_order_paid, dispatch_uid="django_points_earn.shop_signal")
        except ImportError:
            return  # reported by the system checks (points_earn.E006)


def on_order_refunded(
    sender: Any, order: Any = None, amount: Any = None, reason: str = "", refund_id: str | None = None, **kwargs: Any
) -> None:
    """``order_refunded``: record the reversal in the shop's transaction; a job sends it after commit. Never raises."""
    try:
        reversal = record_refund(order, amount=amount, reason=reason, refund_id=refund_id)
    except Exception:
        log.exception(
            "could not record the refund of order %r; the refund itself continues", getattr(order, "pk", order)
        )
        return
    if reversal is not None and reversal.status == "queued":
        drain_after_commit(reversal.record.account)


def record_refund(order: Any, *, amount: Any = None, reason: str = "", refund_id: str | None = None):
    """Find the order's earning and record a reversal for this refund (idempotent per ``refund_id``).

    Without a ``refund_id``, a full refund is keyed ``full`` and a partial one by its amount and reason, so a
    repeated signal stays one reversal; pass the shop's own refund id to tell two equal partial refunds apart.
    """
    from .reversals import create

    adapter = get_adapter()
    account, number = adapter.get_account(order), str(adapter.get_order_number(order) or "").strip()
    # Only a purchase is taken back: a rating's points are never reversed by us (Points does not either).
    record = EarningRecord.objects.filter(account=account, kind=Kind.PURCHASE, order_number=number).first()
    if record is None:
        log.warning("refund of %s/%s: the order has no earning; nothing to take back", account, number)
        return None
    key = refund_id or ("full" if amount is None else f"{amount}:{reason}"[:100])
    reversal, _ = create(record, refund_id=str(key), amount=amount, reason=reason or "")
    return reversal
