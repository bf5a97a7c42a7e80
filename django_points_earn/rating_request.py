"""What an approved review earns on, independent of the platform: :class:`RatingRequest`.

Points awards a flat amount, set by the merchant, for a store rating and for a product rating, keyed by the
review's reference (its idempotency key). The shop's adapter builds this from its review
(:meth:`~django_points_earn.review_adapter.ReviewMethods.build_rating_request`); it is validated, frozen as JSON on
the :class:`~django_points_earn.models.EarningRecord` (``kind`` store_rating or product_rating, the reference as
``order_number``) and turned into the platform's body by its backend (``build_rating_payload``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .choices import Kind
from .conf import get_settings, setting_path
from .earning_request import InvalidEarningRequest

# Points documents no length for these; a longer text is cut, never a reason to refuse the earning (audit only).
COMMENT_MAX = 1000
PRODUCT_NAME_MAX = 255
PRODUCT_ID_MAX = 100


@dataclass
class RatingRequest:
    """One approved review's earning request."""

    account: str
    kind: str  # Kind.STORE_RATING or Kind.PRODUCT_RATING
    reference: str  # Points' review_reference: unique per merchant and stable forever
    phone: str | None
    product_id: str | None = None
    product_name: str | None = None
    rating: int | None = None
    comment: str | None = None
    metadata: dict[str, Any] | None = None
    review_id: str = ""  # the shop's primary key of the review, for the admin

    def validate(self) -> None:
        """Checks every platform needs; raises :class:`InvalidEarningRequest` with the first problem found."""
        if self.kind not in (Kind.STORE_RATING, Kind.PRODUCT_RATING):
            raise InvalidEarningRequest(
                f"review kind is {self.kind!r}; expected 'store_rating' or 'product_rating'", field="kind"
            )
        self.reference = str(self.reference or "").strip()
        if not self.reference:
            raise InvalidEarningRequest("review has no reference", field="reference")
        if len(self.reference) > 100:
            raise InvalidEarningRequest("review reference is longer than 100 characters", field="reference")
        if self.kind == Kind.PRODUCT_RATING:
            product = str(self.product_id or "").strip()
            if not product:
                raise InvalidEarningRequest("a product rating needs the product's id", field="product_id")
            if len(product) > PRODUCT_ID_MAX:
                raise InvalidEarningRequest(
                    f"product id is longer than {PRODUCT_ID_MAX} characters", field="product_id"
                )
            self.product_id = product
        self.rating = _rating(self.rating)
        if self.product_name is not None:
            self.product_name = str(self.product_name).strip()[:PRODUCT_NAME_MAX] or None
        if self.comment is not None:
            self.comment = str(self.comment)[:COMMENT_MAX]
        if self.metadata is not None:
            _check_metadata(self.metadata)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RatingRequest:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _rating(value: Any) -> int | None:
    """1 to 5, or None. A whole number given as text ("4") is taken; 4.5, True or "great" are refused."""
    if value is None or value == "":
        return None
    refused = InvalidEarningRequest(f"rating must be a whole number from 1 to 5, not {value!r}", field="rating")
    if isinstance(value, bool):
        raise refused
    try:
        number = value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise refused from None
    if not 1 <= number <= 5:
        raise InvalidEarningRequest(f"rating is {number}; it must be from 1 to 5", field="rating")
    return number


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise InvalidEarningRequest("metadata must be a dict", field="metadata")
    try:
        text = json.dumps(metadata, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidEarningRequest(f"metadata is not JSON-serialisable: {exc}", field="metadata") from None
    limit = int(get_settings().limits["MAX_METADATA_BYTES"])
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidEarningRequest(
            f"metadata is {size} bytes as JSON, more than the {limit} allowed by "
            f"{setting_path('LIMITS', 'MAX_METADATA_BYTES')}",
            field="metadata",
        )
