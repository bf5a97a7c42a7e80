"""Points (papp.sa): ``POST /v1/orders/earning`` and ``GET /v1/orders/{uuid}`` (docs/platforms/points.md)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import requests

from ..earning_request import EarningRequest, InvalidEarningRequest
from ..phones import InvalidPhone, normalize_ksa_mobile
from .base import (
    AWARDED,
    DUPLICATE,
    FORBIDDEN,
    FULLY_REVERSED,
    PENDING_ACTIVATION,
    RATE_LIMITED,
    REJECTED,
    UNAUTHORIZED,
    UNAVAILABLE,
    BaseBackend,
    EarnResult,
    LookupResult,
    PlatformError,
    cut,
    describe_exception,
    parse_retry_after,
    scrub,
    to_json_number,
)
from .points_ratings import PATHS as RATING_PATHS
from .points_ratings import rating_answer, rating_body

# Points caps a refund's reason at 500 characters.
REFUND_REASON_MAX = 500


def refund_tag(refund_id: str) -> str:
    """How our refunds are marked in their reason, to tell them from refunds made in the Points dashboard."""
    return f"[refund {refund_id}]"


def _points(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None


def _order_data(body: Any) -> dict[str, Any]:
    """The order resource: under ``data`` per the spec, at the top level sometimes (per the PHP SDK)."""
    if not isinstance(body, dict):
        return {}
    data = body.get("data")
    return data if isinstance(data, dict) else body


class PointsBackend(BaseBackend):
    provider = "points"
    label = "Points"  # the product name: not translated
    defaults = {
        # The contract's production host; Points' own sandbox is https://sandbox.papp.sa/api/v1, and
        # `manage.py points_sandbox` serves a local one on http://127.0.0.1:8765/api/v1.
        "BASE_URL": "https://business.papp.sa/api/v1",
        # Points does not document what a resent order_number returns once its lock is released; these
        # are the answers recognised as "this order_number exists already" (status codes and message words).
        "DUPLICATE_STATUS_CODES": (400, 409, 422),  # 409 always counts
        # words in such an answer's body that mean "exists already"
        "DUPLICATE_MARKERS": ("already been taken", "already exists", "duplicate", "already used"),
        # HTTP 400 is both Points' key error ("Invalid or inactive API key", "API key is required") and a business
        # refusal: only a 400 whose message has one of these words pauses the account; any other 400 is rejected.
        "AUTH_ERROR_MARKERS": ("api key",),
    }
    required_keys = ("API_KEY",)
    # API_KEY: the merchant's private key (x-api-key); WEBHOOK_SECRET: the registered webhook's secret.
    secret_keys = ("API_KEY", "WEBHOOK_SECRET")
    base_url_carries = "the API key"
    supports_refunds = True
    supports_ratings = True
    webhook_view = "django_points_earn.webhooks.receive"
    webhook_parser = "django_points_earn.providers.points_webhooks.parse"

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.account.secret("API_KEY")}

    # -- request --------------------------------------------------------------------------------------------
    def build_payload(self, request: EarningRequest) -> dict[str, Any]:
        request.validate()
        try:
            phone = normalize_ksa_mobile(request.phone)
        except InvalidPhone as exc:
            raise InvalidEarningRequest(str(exc), field="phone") from None
        payload: dict[str, Any] = {
            "phone_number": phone,
            "total_price": to_json_number(request.total),
            "order_number": request.order_number,
            "products": [
                {
                    "product_name": str(line.name)[:255],
                    "product_price": to_json_number(line.unit_price),
                    "quantity": line.quantity,
                }
                for line in request.lines
            ],
        }
        if request.customer_name:
            payload["name"] = str(request.customer_name)[:255]
        for name in ("shipping_amount", "tax_amount", "discount_amount"):
            value = getattr(request, name)
            if value is not None:
                payload[name] = to_json_number(value)
        address = request.shipping_address
        if address and (address.city or address.line1):
            payload["shipping_address"] = {
                "city": (address.city or None) and str(address.city)[:100],
                "line1": (address.line1 or None) and str(address.line1)[:255],
            }
        if request.metadata:
            payload["metadata"] = request.metadata
        return payload

    # -- earning --------------------------------------------------------------------------------------------
    def earn(self, payload: dict[str, Any], *, request_id: str, outcome_unknown: bool = False) -> EarnResult:
        response, exc, duration = self.send("POST", "orders/earning", json_body=payload, request_id=request_id)
        result = self.classify_earn(response, exc)
        result.duration_ms = duration
        return result

    def build_rating_payload(self, request: Any) -> dict[str, Any]:
        return rating_body(request)

    def earn_rating(
        self, kind: str, payload: dict[str, Any], *, request_id: str, outcome_unknown: bool = False
    ) -> EarnResult:
        """A review's earning: the purchases' answers, but a 403 rejects only this review (channel disabled)."""
        response, exc, duration = self.send("POST", RATING_PATHS[kind], json_body=payload, request_id=request_id)
        result = rating_answer(self.classify_earn(response, exc), kind)
        result.duration_ms = duration
        return result

    def classify_earn(self, response: requests.Response | None, exc: BaseException | None) -> EarnResult:
        if response is None:
            return self.no_answer(exc)
        code = response.status_code
        body, not_json, common = self.read(response)
        message = scrub(str(body.get("message") or "")) if isinstance(body, dict) else ""

        if 200 <= code < 300:
            if not_json:
                return EarnResult(UNAVAILABLE, f"HTTP {code} but the {not_json}", outcome_unknown=True, **common)
            if not isinstance(body, dict):
                return EarnResult(UNAVAILABLE, f"HTTP {code} with an unexpected body", outcome_unknown=True, **common)
            if body.get("status") is False:
                return EarnResult(
                    UNAVAILABLE,
                    f"HTTP {code} but status false: {message or 'no message'}",
                    outcome_unknown=True,
                    **common,
                )
            data = _order_data(body)
            if data.get("pending_client_activation") is True:
                pending = (
                    data.get("pending_earning_order") if isinstance(data.get("pending_earning_order"), dict) else {}
                )
                return EarnResult(
                    PENDING_ACTIVATION,
                    "customer has not activated their Points account yet; Points will award on activation",
                    remote_reference=str(pending.get("id") or ""),
                    points=_points(pending.get("total_points")),
                    **common,
                )
            if data.get("uuid"):
                return EarnResult(
                    AWARDED,
                    remote_id=str(data["uuid"]),
                    remote_reference=str(data.get("reference_number") or ""),
                    remote_status=str(data.get("order_status") or ""),
                    points=_points(data.get("total_points")),
                    **common,
                )
            return EarnResult(
                UNAVAILABLE, f"HTTP {code} without an order uuid or a pending flag", outcome_unknown=True, **common
            )

        if not_json and code in (400, 409, 422):
            # A garbled refusal could be a duplicate (already awarded) or a bad key: we cannot tell, so it is an
            # unknown outcome and the same order number is resent, rather than blocking or rejecting on a guess.
            return EarnResult(UNAVAILABLE, f"HTTP {code} but the {not_json}", outcome_unknown=True, **common)
        if code == 429:
            # On the earning endpoints a 429 is Points' per-merchant lock (§7): another earning call holds it.
            return EarnResult(
                RATE_LIMITED,
                message or "Points is busy with another earning call for this merchant",
                retry_after=_retry_after(response),
                lock_busy=True,
                **common,
            )
        if self.is_duplicate(code, body):
            return EarnResult(DUPLICATE, message or "order number already exists on Points", **common)
        if code == 422:
            errors = _field_errors(body)
            detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()) or message or "validation failed"
            return EarnResult(REJECTED, f"Points refused the data: {detail}", field_errors=errors, **common)
        if code == 401 or (code == 400 and self.is_key_error(message)):
            return EarnResult(UNAUTHORIZED, f"Points refused the API key: {message or f'HTTP {code}'}", **common)
        if code == 400:
            # Not the documented key error: a refusal of this order (the account is not paused for it).
            return EarnResult(
                REJECTED,
                f"Points refused this earning (HTTP 400): {message or 'no message'}; not the documented API-key "
                "error, so only this earning waits for a human",
                **common,
            )
        if code == 403:
            return EarnResult(FORBIDDEN, f"Points refused the merchant: {message or 'HTTP 403'}", **common)
        if code >= 500 or code == 408:
            detail = message or not_json or "no detail"
            return EarnResult(UNAVAILABLE, f"Points answered HTTP {code}: {detail}", outcome_unknown=True, **common)
        if code in (404, 405):
            return EarnResult(
                UNAVAILABLE, f"HTTP {code} from {self.url('orders/earning')}: check the account's BASE_URL", **common
            )
        return EarnResult(REJECTED, f"Points answered HTTP {code}: {message or not_json or 'no detail'}", **common)

    def is_key_error(self, message: str) -> bool:
        """Points answers a missing or bad key with HTTP 400 and one of its documented messages (§1.2); business
        refusals are 400 too, so only these words pause the account."""
        text = message.lower()
        return any(marker.lower() in text for marker in self.account.option("AUTH_ERROR_MARKERS", ()))

    def is_duplicate(self, code: int, body: Any) -> bool:
        """Points does not document its duplicate answer; the status codes and words are settings."""
        if code == 409:
            return True
        if code not in tuple(self.account.option("DUPLICATE_STATUS_CODES", ())):
            return False
        if not isinstance(body, dict):
            return False
        texts = [str(body.get("message") or "")]
        errors = body.get("errors")
        if isinstance(errors, dict):  # a rating's key is its review_reference
            for key in ("order_number", "review_reference"):
                texts += [str(m) for m in (errors.get(key) or [])]
        haystack = " ".join(texts).lower()
        return any(marker.lower() in haystack for marker in self.account.option("DUPLICATE_MARKERS", ()))

    # -- refunds --------------------------------------------------------------------------------------------
    def refund_body(self, record: Any, reversal: Any, amount: Decimal | None = None) -> dict[str, Any]:
        """``{amount, reason}``: ``amount`` is what this refund takes back, given explicitly even for "the rest"
        (Points reads a missing amount as the full captured amount, more than is left after a partial refund);
        omitted only when the order's total is unknown. The reason starts with the shop's refund id, which is
        never cut (only the free text is), so the ``refunded`` webhook can always be matched to this reversal."""
        tag = refund_tag(reversal.refund_id)
        free = " ".join(str(reversal.reason or "").split())
        room = REFUND_REASON_MAX - len(tag) - 1
        reason = f"{tag} {free[:room].rstrip()}".strip() if room > 0 and free else tag
        body: dict[str, Any] = {"reason": reason}
        if amount is not None:
            body["amount"] = to_json_number(amount)
        return body

    @classmethod
    def is_our_refund(cls, refund_id: str, reason: str) -> bool:
        """Our refunds carry their tag in the reason Points keeps (``refund_body``); the dashboard's do not."""
        return refund_tag(refund_id) in reason

    def snapshot(self, record: Any) -> dict[str, Any]:
        """What the platform shows for the order now; compared after a refund call whose answer was lost."""
        seen = self.lookup(record.remote_id)
        data = _order_data(seen.body)
        return {"found": seen.found, "order_status": seen.remote_status, "updated_at": data.get("updated_at")}

    def reverse(
        self,
        record: Any,
        body: dict[str, Any],
        *,
        request_id: str,
        before: dict[str, Any] | None,
        outcome_unknown: bool = False,
    ) -> EarnResult:
        """``POST /orders/{uuid}/refund``. After a lost answer, look first: a refund is never sent twice."""
        if outcome_unknown and before is not None:
            try:
                now = self.snapshot(record)
            except PlatformError as exc:
                return EarnResult(
                    UNAVAILABLE, f"could not check whether the refund landed: {exc}", outcome_unknown=True
                )
            if now != before:
                return EarnResult(
                    AWARDED,
                    f"the earlier refund call had landed (order now {now['order_status']})",
                    remote_status=_after_refund(now["order_status"]),
                )
        response, exc, duration = self.send(
            "POST", f"orders/{record.remote_id}/refund", json_body=body, request_id=request_id
        )
        result = self.classify_refund(response, exc)
        result.duration_ms = duration
        return result

    def classify_refund(self, response: requests.Response | None, exc: BaseException | None) -> EarnResult:
        if response is None:
            return self.no_answer(exc)
        code = response.status_code
        body, not_json, common = self.read(response)
        message = scrub(str(body.get("message") or "")) if isinstance(body, dict) else ""
        if 200 <= code < 300 and not not_json:
            data = _order_data(body)
            return EarnResult(
                AWARDED,
                f"refunded (order now {data.get('order_status')})",
                remote_status=_after_refund(data.get("order_status")),
                **common,
            )
        if not_json or code >= 500 or code == 408:
            return EarnResult(
                UNAVAILABLE, f"Points answered HTTP {code}: {message or not_json}", outcome_unknown=True, **common
            )
        if code == 429:
            return EarnResult(RATE_LIMITED, message or "busy", retry_after=_retry_after(response), **common)
        if code == 400 and self.is_key_error(message):
            return EarnResult(UNAUTHORIZED, f"Points refused the API key: {message}", **common)
        if code == 403:
            return EarnResult(FORBIDDEN, f"Points refused the merchant: {message}", **common)
        return EarnResult(REJECTED, f"Points refused the refund (HTTP {code}): {message or 'no detail'}", **common)

    # -- webhook registration -------------------------------------------------------------------------------
    def register_webhook(self, name: str, url: str) -> dict[str, Any]:
        """``POST /webhooks``: returns the webhook resource, secret included (the caller keeps it safe)."""
        response, exc, _ = self.send("POST", "webhooks", json_body={"name": name, "url": url})
        if response is None:
            raise PlatformError(describe_exception(exc)[0] if exc else "no answer")
        body, not_json = self.parse_json(response)
        data = _order_data(body)
        if response.status_code != 200 or not_json or not data.get("secret"):
            message = body.get("message") if isinstance(body, dict) else not_json
            raise PlatformError(
                f"Points refused the webhook (HTTP {response.status_code}): {scrub(str(message))}",
                http_status=response.status_code,
            )
        return data

    def list_webhooks(self) -> list[dict[str, Any]]:
        """``GET /webhooks``, without the secrets."""
        response, exc, _ = self.send("GET", "webhooks")
        if response is None or response.status_code != 200:
            raise PlatformError(
                f"could not list webhooks: {describe_exception(exc)[0] if exc else response.status_code}"
            )
        body, _ = self.parse_json(response)
        items = body.get("data") if isinstance(body, dict) else body
        return [{k: v for k, v in w.items() if k != "secret"} for w in (items or []) if isinstance(w, dict)]

    # -- lookup ---------------------------------------------------------------------------------------------
    def lookup(self, remote_id: str) -> LookupResult:
        response, exc, _ = self.send("GET", f"orders/{remote_id}")
        if response is None:
            raise PlatformError(describe_exception(exc)[0] if exc else "no answer")
        body, not_json = self.parse_json(response)
        if response.status_code == 404:
            return LookupResult(found=False, http_status=404, message="Points does not know this order")
        if response.status_code != 200 or not_json:
            raise PlatformError(
                f"GET orders/{remote_id}: HTTP {response.status_code} {not_json or ''}".strip(),
                http_status=response.status_code,
                body=cut(scrub(response.text)),
            )
        data = _order_data(body)
        return LookupResult(
            found=True,
            remote_id=str(data.get("uuid") or remote_id),
            remote_reference=str(data.get("reference_number") or ""),
            remote_status=str(data.get("order_status") or ""),
            points=_points(data.get("total_points")),
            body=body,
            http_status=200,
        )


def _after_refund(order_status: Any) -> str:
    """A refund answer's order state; ``fully_refunded`` means every point is back, whatever our sums say."""
    status = str(order_status or "")
    return FULLY_REVERSED if status == "fully_refunded" else status


def _field_errors(body: Any) -> dict[str, list[str]]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict):
        return {}
    return {str(k): [scrub(str(m)) for m in (v if isinstance(v, list) else [v])] for k, v in errors.items()}


def _retry_after(response: requests.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))
