"""What the app stores. Outbox rows (earnings, reversals) change state only through :mod:`django_points_earn.outbox`,
as their lifecycles (``lifecycle``, ``reversals``) direct it."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext_lazy as _

from .choices import Kind
from .phones import mask_phone


class Status(models.TextChoices):
    # Recorded, and kept back until ``send_after`` (the return window): a refund meanwhile changes what is sent, or
    # cancels it; the sweep queues it when the time comes.
    HELD = "held", _("Held until the return window closes")
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    AWARDED = "awarded", _("Awarded")
    PENDING_ACTIVATION = "pending_activation", _("Pending activation")
    # The platform holds the order (a resend after a lost answer got "duplicate"), but it never said whether it
    # credited the customer or waits for their activation: its approved webhook settles it.
    ACCEPTED = "accepted", _("Accepted by the platform, awaiting confirmation")
    REJECTED = "rejected", _("Rejected")
    BLOCKED = "blocked", _("Blocked")
    FAILED = "failed", _("Failed")
    REVERSED = "reversed", _("Reversed")
    PARTIALLY_REVERSED = "partially_reversed", _("Partially reversed")
    SKIPPED = "skipped", _("Skipped")
    RESOLVED = "resolved", _("Resolved by hand")
    CANCELLED = "cancelled", _("Cancelled before sending")


RATING_KINDS = (Kind.STORE_RATING, Kind.PRODUCT_RATING)


# A human has to act on these (fix data, fix the account, retry).
NEEDS_ATTENTION = (Status.REJECTED, Status.BLOCKED, Status.FAILED)
# Work remains for the worker.
IN_PROGRESS = (Status.QUEUED, Status.SENDING)


class Trigger(models.TextChoices):
    WORKER = "worker", _("Worker")
    ADMIN = "admin", _("Admin")
    RECONCILE = "reconcile", _("Reconcile")
    CHECKOUT = "checkout", _("Checkout")


class OutboxRow(models.Model):
    """What every outbox row holds for :mod:`django_points_earn.outbox`, the one machine that sends them: its
    lease (a worker's claim), its retry bookkeeping and its timestamps. ``status`` is each model's own (its states
    differ); the engine reads and writes it through the model's transition table."""

    status_reason = models.TextField(_("reason"), blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0, help_text=_("Attempts that failed or were lost."))
    rate_limited = models.PositiveIntegerField(_("rate-limited answers"), default=0)
    outcome_unknown = models.BooleanField(
        _("an earlier outcome is unknown"),
        default=False,
        help_text=_("A call may have reached the platform without us seeing the answer (timeout, 5xx, crash)."),
    )
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires"), null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    # When ``points_reconcile --fail-on new`` last reported this row as needing a human; it is new again once it
    # changes state after that (``updated_at`` is later), so an alert fires once per problem, not every run.
    attention_reported_at = models.DateTimeField(
        _("reported as needing a human"), null=True, blank=True, editable=False
    )

    class Meta:
        abstract = True


class EarningRecord(OutboxRow):
    """One paid order's (or approved review's) earning on one account: the outbox row and its current state."""

    account = models.CharField(_("account"), max_length=64)
    provider = models.CharField(_("platform"), max_length=16)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.PURCHASE)
    # A purchase's order number, or a rating's review reference (Points' idempotency key for that channel).
    order_number = models.CharField(_("order number"), max_length=100)
    order_id = models.CharField(_("shop order id"), max_length=64, blank=True)
    phone = models.CharField(_("phone"), max_length=32, blank=True, help_text=_("Normalised when valid."))
    total = models.DecimalField(_("total"), max_digits=14, decimal_places=2, null=True, blank=True)

    # Frozen at checkout: the provider-neutral request, and the exact body the platform will receive.
    request = models.JSONField(_("order data"), default=dict)
    payload = models.JSONField(_("request payload"), null=True, blank=True)

    status = models.CharField(_("state"), max_length=24, choices=Status.choices, default=Status.QUEUED)
    # A held earning is sent from this moment on (empty while held until the order is delivered).
    send_after = models.DateTimeField(_("held until"), null=True, blank=True)

    remote_id = models.CharField(_("platform id"), max_length=64, blank=True)
    remote_reference = models.CharField(_("platform reference"), max_length=64, blank=True)
    remote_status = models.CharField(_("platform state"), max_length=32, blank=True)
    points = models.DecimalField(_("points"), max_digits=14, decimal_places=2, null=True, blank=True)
    response = models.JSONField(_("last platform answer"), null=True, blank=True)
    # What a remote check (reconcile --verify-remote, the admin's "verify") last saw; drift is never "fixed".
    remote_checked_at = models.DateTimeField(_("last checked with the platform"), null=True, blank=True)
    drift = models.CharField(_("differs from the platform"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("earning")
        verbose_name_plural = _("earnings")
        constraints = [
            # One record per (account, kind, number): a review whose reference equals an order number of the same
            # account still gets its own record (rejected with the reason, see rating_receivers), never lost.
            models.UniqueConstraint(
                fields=["account", "kind", "order_number"], name="points_earn_one_record_per_order"
            ),
        ]
        indexes = [
            # The dispatcher's and the sweep's question: what is due, per account?
            models.Index(fields=["status", "account", "next_attempt_at"], name="points_earn_due"),
            models.Index(fields=["status", "lease_expires_at"], name="points_earn_lease"),
            # The sweep's release of held earnings whose time has come.
            models.Index(fields=["status", "send_after"], name="points_earn_held"),
            models.Index(fields=["created_at"], name="points_earn_created"),
            models.Index(fields=["remote_id"], name="points_earn_remote_id"),
            models.Index(fields=["phone"], name="points_earn_phone"),
            # The admin at a million rows: search (order number, platform reference), a state filter in the
            # list's order (newest first) and the oldest queued, the hourly award chart, and drifted earnings.
            models.Index(fields=["order_number"], name="points_earn_order_number"),
            # The admin's "kind" filter in the list's order.
            models.Index(fields=["kind", "id"], name="points_earn_kind_id"),
            models.Index(fields=["remote_reference"], name="points_earn_remote_ref"),
            models.Index(fields=["status", "id"], name="points_earn_status_id"),
            models.Index(fields=["completed_at"], name="points_earn_completed"),
            models.Index(fields=["status"], condition=~models.Q(drift=""), name="points_earn_drifted"),
        ]
        permissions = [
            ("retry_earningrecord", _("Can retry earnings")),
            ("verify_earningrecord", _("Can verify earnings with the platform")),
            ("resolve_earningrecord", _("Can mark earnings resolved")),
            ("correct_earningrecord", _("Can correct and resend rejected earnings")),
            ("hold_earningrecord", _("Can send held earnings now or hold them longer")),
        ]

    def __str__(self) -> str:
        return f"{self.account}/{self.order_number} ({self.status})"

    @property
    def masked_phone(self) -> str:
        return mask_phone(self.phone)

    @property
    def needs_attention(self) -> bool:
        return self.status in NEEDS_ATTENTION


class EarningAttempt(models.Model):
    """One call to the platform, written (committed) before the call and completed after it."""

    record = models.ForeignKey(EarningRecord, on_delete=models.CASCADE, related_name="attempt_set")
    # Set when the call took points back (a refund) rather than awarding them.
    reversal = models.ForeignKey(
        "Reversal",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="attempt_set",
        verbose_name=_("reversal"),
    )
    number = models.PositiveIntegerField(_("number"))
    trigger = models.CharField(_("triggered by"), max_length=16, choices=Trigger.choices, default=Trigger.WORKER)
    actor = models.CharField(_("who"), max_length=150, blank=True)
    request_id = models.UUIDField(_("request id"), default=uuid.uuid4, editable=False)
    # The body sent, stored whole on the first attempt and whenever it changed; the others keep only its SHA-256
    # (``outbox.attempt_body`` finds the attempt that holds it), so retries do not copy the body each time.
    request_body = models.JSONField(_("sent"), null=True, blank=True)
    request_sha256 = models.CharField(_("SHA-256 of the body sent"), max_length=64, blank=True)
    started_at = models.DateTimeField(_("started"))
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=24, blank=True)
    outcome_unknown = models.BooleanField(_("outcome unknown"), default=False)
    error = models.TextField(_("error"), blank=True)
    response_body = models.TextField(_("answer"), blank=True)

    class Meta:
        verbose_name = _("attempt")
        verbose_name_plural = _("attempts")
        ordering = ["record_id", "number"]
        indexes = [models.Index(fields=["started_at"], name="points_earn_attempt_started")]

    def __str__(self) -> str:
        return f"#{self.number} {self.outcome or 'in flight'}"


class EarningEvent(models.Model):
    """The audit trail: every state change, who made it and why."""

    record = models.ForeignKey(EarningRecord, on_delete=models.CASCADE, related_name="event_set")
    # Set when the change was a refund's (its outbox row), shown on the earning's timeline with the earning's own.
    reversal = models.ForeignKey(
        "Reversal",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="event_set",
        verbose_name=_("reversal"),
    )
    at = models.DateTimeField(_("when"), auto_now_add=True)
    from_status = models.CharField(_("from"), max_length=24, blank=True)
    to_status = models.CharField(_("to"), max_length=24)
    trigger = models.CharField(_("triggered by"), max_length=16, choices=Trigger.choices)
    actor = models.CharField(_("who"), max_length=150, blank=True)
    note = models.TextField(_("note"), blank=True)

    class Meta:
        verbose_name = _("state change")
        verbose_name_plural = _("state changes")
        ordering = ["record_id", "at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status or '∅'} → {self.to_status}"


class ReconciliationDashboard(EarningRecord):
    """No table of its own: gives the admin's reconciliation dashboard its place in the app index."""

    class Meta:
        proxy = True
        verbose_name = _("reconciliation dashboard")
        verbose_name_plural = _("reconciliation dashboard")
        default_permissions = ()


class AccountState(models.Model):
    """An account's pause switch: set when the platform refuses the account (bad key, merchant not allowed)."""

    account = models.CharField(_("account"), max_length=64, primary_key=True)
    paused = models.BooleanField(_("paused"), default=False)
    reason = models.TextField(_("reason"), blank=True)
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True)
    resumed_at = models.DateTimeField(_("resumed at"), null=True, blank=True)
    resumed_by = models.CharField(_("resumed by"), max_length=150, blank=True)
    # After a call that got no answer in time, the platform may still be working on it: no call of this account
    # before this moment, whichever worker (the database remembers it even if Redis loses the account lock).
    busy_until = models.DateTimeField(_("busy until"), null=True, blank=True)
    # The record whose call timed out then: the account's first call after ``busy_until`` is its resend, so no
    # other earning runs into the platform's work on it. Cleared once its resend got an answer.
    resend_first = models.BigIntegerField(_("resend first (earning id)"), null=True, blank=True)

    class Meta:
        verbose_name = _("account")
        verbose_name_plural = _("accounts")
        permissions = [("resume_accountstate", _("Can resume paused accounts"))]

    def __str__(self) -> str:
        return f"{self.account} ({'paused' if self.paused else 'active'})"


class ReversalStatus(models.TextChoices):
    WAITING = "waiting", _("Waiting for the earning")
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    REVERSED = "reversed", _("Points taken back")
    REJECTED = "rejected", _("Rejected")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Nothing to take back")


class Reversal(OutboxRow):
    """One refund event of a paid order: the outbox row that takes (some of) its points back.

    ``refund_id`` is the shop's refund reference: a refund that arrives twice is one reversal. ``amount`` None
    means the whole remaining amount. ``source`` says whether the shop asked (``shop``) or the platform told us
    about a refund made in its own dashboard (``platform``).
    """

    record = models.ForeignKey(
        EarningRecord, on_delete=models.CASCADE, related_name="reversal_set", verbose_name=_("earning")
    )
    refund_id = models.CharField(_("refund reference"), max_length=100)
    source = models.CharField(_("source"), max_length=16, default="shop")
    amount = models.DecimalField(
        _("amount"),
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_("Empty: the whole remaining amount."),
    )
    reason = models.CharField(_("reason"), max_length=400, blank=True)
    status = models.CharField(_("state"), max_length=16, choices=ReversalStatus.choices, default=ReversalStatus.WAITING)
    # What the platform showed just before our first call: a later lookup that differs means our call landed.
    remote_before = models.JSONField(null=True, blank=True, editable=False)
    points = models.DecimalField(_("points taken back"), max_digits=14, decimal_places=2, null=True, blank=True)
    remote_reference = models.CharField(_("platform reference"), max_length=100, blank=True)
    response = models.JSONField(_("last platform answer"), null=True, blank=True)

    class Meta:
        verbose_name = _("reversal")
        verbose_name_plural = _("reversals")
        constraints = [
            models.UniqueConstraint(fields=["record", "refund_id"], name="points_earn_one_reversal_per_refund"),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="points_earn_reversal_due"),
            # The sweep's batched lease recovery, as for earnings.
            models.Index(fields=["status", "lease_expires_at"], name="points_earn_reversal_lease"),
        ]
        permissions = [("reverse_earningrecord", _("Can take points back (refunds)"))]

    def __str__(self) -> str:
        return f"{self.record.order_number} refund {self.refund_id} ({self.status})"


class WebhookDelivery(models.Model):
    """Every webhook delivery that passed the secret check, stored before it is processed (in a job)."""

    account = models.CharField(_("account"), max_length=64)
    event = models.CharField(_("event"), max_length=64)
    order_uuid = models.CharField(_("platform id"), max_length=64, blank=True)
    order_number = models.CharField(_("order number"), max_length=100, blank=True)
    # Redeliveries share it; two different partial refunds of one order do not (see the Points contract, 8.5).
    dedupe_key = models.CharField(max_length=64, unique=True)
    payload = models.JSONField(_("payload"))
    received_at = models.DateTimeField(_("received"), auto_now_add=True)
    redeliveries = models.PositiveIntegerField(_("redeliveries"), default=0)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)
    result = models.TextField(_("result"), blank=True)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        indexes = [models.Index(fields=["processed_at"], name="points_earn_webhook_todo")]
        permissions = [("reapply_webhookdelivery", _("Can apply webhook deliveries again"))]

    def __str__(self) -> str:
        return f"{self.event} {self.order_number or self.order_uuid}"


class AlertKind(models.TextChoices):
    LOW_BALANCE = "low_balance_warning", _("Low balance")
    DEBT_EXCEEDED = "debt_exceeded", _("Debt limit exceeded")
    # A 403 answer to an earning call: the merchant is not funded, not allowed, or the channel is off.
    ACCOUNT_REFUSED = "account_refused", _("The platform refused the merchant")


class MerchantAlert(models.Model):
    """The platform said the merchant's balance (or the merchant itself) stands in the way of earnings: from a
    merchant-level webhook or a 403 answer. Shown as a banner while the account's latest one is unresolved."""

    account = models.CharField(_("account"), max_length=64)
    kind = models.CharField(_("kind"), max_length=32, choices=AlertKind.choices)
    message = models.TextField(_("message"), blank=True)
    current_balance = models.DecimalField(_("current balance"), max_digits=14, decimal_places=2, null=True, blank=True)
    order_points = models.DecimalField(_("points of the order"), max_digits=14, decimal_places=2, null=True, blank=True)
    balance_after_order = models.DecimalField(
        _("balance after the order"), max_digits=14, decimal_places=2, null=True, blank=True
    )
    max_debt_allowed = models.DecimalField(_("debt allowed"), max_digits=14, decimal_places=2, null=True, blank=True)
    merchant_name = models.CharField(_("merchant"), max_length=255, blank=True)
    platform_time = models.CharField(_("platform time"), max_length=64, blank=True)
    # A webhook redelivery (or a delivery applied again) finds its alert by this: one alert, one mail.
    dedupe_key = models.CharField(max_length=64, unique=True)
    received_at = models.DateTimeField(_("received"), auto_now_add=True)
    resolved_at = models.DateTimeField(_("resolved"), null=True, blank=True)
    resolved_by = models.CharField(_("resolved by"), max_length=150, blank=True)

    class Meta:
        verbose_name = _("balance alert")
        verbose_name_plural = _("balance alerts")
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["resolved_at", "account"], name="points_earn_alert_open")]
        permissions = [("resolve_merchantalert", _("Can mark balance alerts resolved"))]

    def __str__(self) -> str:
        return f"{self.account}: {self.kind}"
