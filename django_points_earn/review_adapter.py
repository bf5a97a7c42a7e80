"""How the app reads a shop's approved review: the ``get_review_*`` methods every
:class:`~django_points_earn.adapters.OrderAdapter` has (this mixin), assembled into a
:class:`~django_points_earn.rating_request.RatingRequest` by :meth:`ReviewMethods.build_rating_request`.

A shop that sends ``review_approved`` implements at least ``get_review_reference`` and ``get_review_phone``; a
product review also ``get_review_product_id``. The rest is optional.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .choices import Kind
from .conf import get_settings, setting_path
from .rating_request import RatingRequest


class ReviewMethods:
    """Reads the shop's review. Override the ``get_review_*`` methods; the defaults return "not given"."""

    # -- required -------------------------------------------------------------------------------------------
    def get_review_reference(self, review: Any) -> str:
        """The review's reference (Points' ``review_reference``): unique per account and stable forever. Points
        keeps it as the earning's order number, so it must differ from every order number of the account: e.g.
        ``f"review-{review.pk}"``."""
        raise NotImplementedError("OrderAdapter.get_review_reference() must be implemented to earn on reviews")

    def get_review_phone(self, review: Any) -> str | None:
        raise NotImplementedError("OrderAdapter.get_review_phone() must be implemented to earn on reviews")

    # -- optional -------------------------------------------------------------------------------------------
    def get_review_kind(self, review: Any) -> str:
        """``"product_rating"`` or ``"store_rating"``. Default: a product rating when the review names a product."""
        return Kind.PRODUCT_RATING if self.get_review_product_id(review) else Kind.STORE_RATING

    def get_review_account(self, review: Any) -> str:
        """Which ``POINTS_EARN["ACCOUNTS"]`` entry the review earns on. Default: the only (or first) one."""
        names = get_settings().account_names
        if not names:
            raise ImproperlyConfigured(f"{setting_path('ACCOUNTS')} is empty.")
        return names[0]

    def get_review_product_id(self, review: Any) -> str | None:
        """The product's SKU or internal id (required for a product rating)."""
        return None

    def get_review_product_name(self, review: Any) -> str | None:
        return None

    def get_review_rating(self, review: Any) -> int | None:
        """1 to 5, or None (Points keeps it for audit only)."""
        return None

    def get_review_comment(self, review: Any) -> str | None:
        return None

    def get_review_metadata(self, review: Any) -> dict[str, Any] | None:
        return None

    def get_review_skip_reason(self, review: Any) -> str | None:
        """A reason to award nothing for this review (e.g. the reviewer is staff); None: it earns."""
        return None

    def get_review_id(self, review: Any) -> str:
        return str(getattr(review, "pk", "") or "")

    # -- assembled ------------------------------------------------------------------------------------------
    def build_rating_request(self, review: Any) -> RatingRequest:
        product_id = self.get_review_product_id(review)
        return RatingRequest(
            account=self.get_review_account(review),
            kind=str(self.get_review_kind(review) or ""),
            reference=str(self.get_review_reference(review) or "").strip(),
            phone=self.get_review_phone(review),
            product_id=None if product_id is None else str(product_id),
            product_name=self.get_review_product_name(review),
            rating=self.get_review_rating(review),
            comment=self.get_review_comment(review),
            metadata=self.get_review_metadata(review),
            review_id=self.get_review_id(review),
        )
