"""The few inputs an action asks for on its confirmation page."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from ..phones import InvalidPhone, normalize_ksa_mobile


class ResolveForm(forms.Form):
    note = forms.CharField(
        label=_("What was done"),
        help_text=_("Kept in the earning's history with your name, e.g. “awarded by hand in the Points dashboard”."),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=1000,
        error_messages={"required": _("Say what was done.")},
    )


class ExtendHoldForm(forms.Form):
    days = forms.IntegerField(
        label=_("Hold longer by (days)"),
        help_text=_("Counted from the end of the current hold (or from now, for one waiting for its delivery)."),
        min_value=1,
        max_value=366,
        initial=7,
    )


class CorrectForm(forms.Form):
    phone = forms.CharField(
        label=_("Customer's mobile number"),
        help_text=_("Any Saudi form: 05XXXXXXXX, 5XXXXXXXX, +9665XXXXXXXX."),
        required=False,
        max_length=32,
        widget=forms.TextInput(attrs={"dir": "ltr", "autocomplete": "off", "inputmode": "tel"}),
    )
    customer_name = forms.CharField(label=_("Customer's name"), required=False, max_length=255)

    def clean_phone(self) -> str:
        phone = self.cleaned_data["phone"].strip()
        if not phone:
            return ""
        try:
            return normalize_ksa_mobile(phone)
        except InvalidPhone:
            raise forms.ValidationError(
                _("This is not a Saudi mobile number (e.g. 05XXXXXXXX or +9665XXXXXXXX).")
            ) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.errors and not data.get("phone") and not (data.get("customer_name") or "").strip():
            raise forms.ValidationError(_("Enter the corrected phone number or name."))
        return data

    def changes(self) -> dict[str, str]:
        return {k: v.strip() for k, v in self.cleaned_data.items() if v and v.strip()}


class ReverseForm(forms.Form):
    amount = forms.DecimalField(
        label=_("Amount to refund (SAR)"),
        help_text=_("Leave empty to take back everything that is left; a part takes back its share of the points."),
        required=False,
        min_value=Decimal("0.01"),
        max_digits=14,
        decimal_places=2,
        widget=forms.NumberInput(attrs={"dir": "ltr", "step": "0.01"}),
    )
    reason = forms.CharField(
        label=_("Reason"),
        help_text=_("Sent to the platform with the refund and kept in the earning's history."),
        max_length=300,
        error_messages={"required": _("Say why the points are taken back.")},
    )
    # One id per confirmation page: a double submission of the same page is one refund.
    refund_id = forms.CharField(widget=forms.HiddenInput, max_length=40)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["refund_id"] = f"admin-{uuid.uuid4().hex[:16]}"
