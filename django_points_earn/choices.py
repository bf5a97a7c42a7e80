"""Choices that code outside the models needs before Django's app registry is ready (the adapter module a shop
imports, the settings reference script): plain ``TextChoices``, no model."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Kind(models.TextChoices):
    """What an earning is for: a paid order, or a review (Points' rating channels, keyed by the review's reference,
    which is stored as the record's ``order_number``)."""

    PURCHASE = "purchase", _("Purchase")
    STORE_RATING = "store_rating", _("Store rating")
    PRODUCT_RATING = "product_rating", _("Product rating")
