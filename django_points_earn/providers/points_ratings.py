"""Points' rating channels (``POST /orders/earning/store-rating`` and ``/product-rating``): the body of an approved
review's earning, and what a 403 means for it. The answers are the purchases' (same envelope, lock, 429 and
pending customer), read by :meth:`~django_points_earn.providers.points.PointsBackend.classify_earn`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..choices import Kind
from ..earning_request import InvalidEarningRequest
from ..phones import InvalidPhone, normalize_ksa_mobile
from ..rating_request import RatingRequest
from .results import FORBIDDEN, REJECTED, EarnResult

PATHS = {
    Kind.STORE_RATING: "orders/earning/store-rating",
    Kind.PRODUCT_RATING: "orders/earning/product-rating",
}
CHANNEL = {Kind.STORE_RATING: "store-rating", Kind.PRODUCT_RATING: "product-rating"}


def rating_body(request: RatingRequest) -> dict[str, Any]:
    """The documented body (§9.1). No points value: Points awards the merchant's flat amount."""
    request.validate()
    try:
        phone = normalize_ksa_mobile(request.phone)
    except InvalidPhone as exc:
        raise InvalidEarningRequest(str(exc), field="phone") from None
    body: dict[str, Any] = {"phone_number": phone, "review_reference": request.reference}
    if request.kind == Kind.PRODUCT_RATING:
        body["product_id"] = request.product_id
        if request.product_name:
            body["product_name"] = request.product_name
    if request.rating is not None:
        body["rating"] = request.rating
    if request.comment:
        body["comment"] = request.comment
    if request.metadata:
        body["metadata"] = request.metadata
    return body


def rating_answer(result: EarnResult, kind: str) -> EarnResult:
    """A 403 on a rating channel is "channel disabled" (§9.1): this review's earning is rejected with that reason,
    and the account is not paused, so its purchases go on. A merchant whose purchases are refused too gets the
    purchases' own 403, which pauses the account. A bad key (400/401) still pauses it: the key is the account's."""
    if result.status != FORBIDDEN:
        return result
    message = (
        f"{result.message}; Points refuses the {CHANNEL.get(kind, kind)} channel for this merchant (HTTP 403, "
        "channel disabled): purchases are not affected. Turn the channel on in the Points dashboard, then retry "
        "this earning"
    )
    return replace(result, status=REJECTED, message=message)
