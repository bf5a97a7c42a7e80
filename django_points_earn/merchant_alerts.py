"""Balance alerts: the platform says the merchant's balance (or the merchant itself) stands in the way of earnings.

Two sources: a merchant-level webhook (Points' ``low_balance_warning`` and ``debt_exceeded``, read by its parser
into :class:`~django_points_earn.providers.events.MerchantBalance`) and a 403 answer to an earning call (not funded,
not allowed, channel off), recorded beside the lifecycle's own decision, never instead of it.

Each new alert is kept once (a redelivery finds it by its key), mailed to the ADMINS once and announced with the
``merchant_balance_low`` signal, both after the commit. The admin shows a banner while an account's latest alert
is unresolved; a person with ``resolve_merchantalert`` resolves it, and who did is kept on the row.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from . import metrics
from .models import AlertKind, MerchantAlert
from .providers.events import MerchantBalance
from .signals import merchant_balance_low

log = logging.getLogger("django_points_earn")

# At most this many accounts' banners (an install has a handful of accounts).
BANNER_LIMIT = 20


def from_webhook(account: str, delivery_key: str, event: MerchantBalance) -> tuple[MerchantAlert, bool]:
    """Keep the event's alert (once per delivery key). Returns it and whether it is new."""
    kind = event.kind if event.kind in AlertKind.values else AlertKind.LOW_BALANCE
    key = hashlib.sha256(f"webhook:{delivery_key}".encode()).hexdigest()
    fields = {
        "account": account,
        "kind": kind,
        "current_balance": event.current_balance,
        "order_points": event.order_points,
        "balance_after_order": event.balance_after_order,
        "max_debt_allowed": event.max_debt_allowed,
        "merchant_name": event.merchant_name,
        "platform_time": event.at,
    }
    try:
        with transaction.atomic():
            alert = MerchantAlert.objects.create(dedupe_key=key, **fields)
    except IntegrityError:
        return MerchantAlert.objects.get(dedupe_key=key), False
    _announce_on_commit(alert)
    return alert, True


def from_refusal(account: str, message: str) -> MerchantAlert | None:
    """A 403 answer to an earning call. One open alert per account for it: the account pauses on it, and a call
    already in flight that gets the same answer adds nothing. Never raises: the answer's recording goes on."""
    try:
        with transaction.atomic():  # a savepoint: a failure here leaves the caller's transaction usable
            if MerchantAlert.objects.filter(
                account=account, kind=AlertKind.ACCOUNT_REFUSED, resolved_at__isnull=True
            ).exists():
                return None
            alert = MerchantAlert.objects.create(
                account=account,
                kind=AlertKind.ACCOUNT_REFUSED,
                message=message[:2000],
                dedupe_key=hashlib.sha256(f"refused:{uuid.uuid4()}".encode()).hexdigest(),
            )
    except Exception:
        log.exception("account %s: the 403 answer's balance alert could not be kept", account)
        return None
    _announce_on_commit(alert)
    return alert


def _announce_on_commit(alert: MerchantAlert) -> None:
    """After the commit, with the row as stored (its amounts as the columns keep them)."""
    transaction.on_commit(lambda: announce(MerchantAlert.objects.filter(pk=alert.pk).first() or alert))


def announce(alert: MerchantAlert) -> None:
    """Mail the ADMINS and send ``merchant_balance_low``; neither may fail the job that kept the alert."""
    metrics.balance_event(alert.account, alert.kind)
    log.warning("account %s: %s (%s)", alert.account, alert.get_kind_display(), describe(alert))
    try:
        mail_admins(f"Loyalty points: {alert.get_kind_display()} on account {alert.account}", mail_body(alert))
    except Exception:
        log.exception("account %s: the balance alert could not be mailed", alert.account)
    for receiver, answer in merchant_balance_low.send_robust(sender=MerchantAlert, alert=alert):
        if isinstance(answer, Exception):
            log.error("a merchant_balance_low receiver (%r) failed: %r", receiver, answer)


def describe(alert: MerchantAlert) -> str:
    """The alert's figures (or the platform's message), in one line."""
    if alert.kind == AlertKind.ACCOUNT_REFUSED:
        return alert.message or "HTTP 403"
    figures = {
        "current balance": alert.current_balance,
        "points of the order": alert.order_points,
        "balance after the order": alert.balance_after_order,
        "debt allowed": alert.max_debt_allowed,
    }
    return ", ".join(f"{name} {value}" for name, value in figures.items() if value is not None) or "no figures"


def mail_body(alert: MerchantAlert) -> str:
    return (
        f"Account: {alert.account}\n"
        f"Merchant: {alert.merchant_name or '(not given)'}\n"
        f"What: {alert.get_kind_display()}: {describe(alert)}\n"
        f"When (platform time): {alert.platform_time or alert.received_at.isoformat()}\n\n"
        "Earnings may be refused until the merchant's balance on the platform is topped up. Mark the alert "
        "resolved in the admin's reconciliation dashboard once it is.\n"
    )


def open_alerts() -> list[MerchantAlert]:
    """Each account's latest alert, for the accounts whose latest alert is unresolved (newest first). One query,
    per account: one account's many warnings never push another account's alert out of the banner."""
    unresolved = MerchantAlert.objects.filter(resolved_at__isnull=True)
    latest = unresolved.filter(account=OuterRef("account")).order_by("-received_at", "-id").values("id")[:1]
    return list(unresolved.filter(id=Subquery(latest)).order_by("-received_at", "-id")[:BANNER_LIMIT])


def resolve(account: str, *, actor: str) -> int:
    """Every unresolved alert of the account is resolved by ``actor`` (kept on the rows). Returns how many."""
    now = timezone.now()
    count = MerchantAlert.objects.filter(account=account, resolved_at__isnull=True).update(
        resolved_at=now, resolved_by=actor[:150]
    )
    if count:
        log.info("account %s: %d balance alert(s) marked resolved by %s", account, count, actor)
    return count


def banner_context() -> dict[str, Any]:
    """What the banner template needs (``admin/django_points_earn/_balance_banner.html``)."""
    return {"balance_alerts": [{"alert": a, "detail": describe(a)} for a in open_alerts()]}
