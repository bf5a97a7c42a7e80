"""Saudi mobile numbers: normalisation to the ``5XXXXXXXX`` form Points expects, and masking for display."""

from __future__ import annotations

import re

# Arabic-Indic (U+0660..) and Eastern Arabic-Indic / Persian (U+06F0..) digits -> ASCII.
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
_SEPARATORS = re.compile(r"[\s\-().\u200e\u200f\u202a-\u202e]")
_KSA_MOBILE = re.compile(r"5\d{8}")


class InvalidPhone(ValueError):
    """The phone number cannot be turned into a Saudi mobile number; the message says why."""


def normalize_ksa_mobile(raw: object) -> str:
    """Return the 9-digit ``5XXXXXXXX`` form of a Saudi mobile number, or raise :class:`InvalidPhone`.

    Accepts every form in the Points contract (``+966…``, ``00966…``, ``966…``, ``05…``, ``5…``), with spaces,
    dashes, brackets and Arabic-Indic digits.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidPhone("no phone number")
    if not isinstance(raw, str | int):
        raise InvalidPhone(f"phone number must be text, not {type(raw).__name__}")
    text = _SEPARATORS.sub("", str(raw).translate(_DIGITS))
    if text.startswith("+"):
        text = text[1:]
        if not text.startswith("966"):
            raise InvalidPhone("phone number is not Saudi (country code must be +966)")
    if not text.isdigit():
        raise InvalidPhone("phone number contains characters other than digits")
    for prefix in ("00966", "966", "0"):
        if text.startswith(prefix) and len(text) - len(prefix) == 9:
            text = text[len(prefix) :]
            break
    if len(text) != 9:
        raise InvalidPhone(_length_message(text))
    if not _KSA_MOBILE.fullmatch(text):
        raise InvalidPhone("phone number is not a Saudi mobile (it must start with 5 after the country code)")
    return text


def _length_message(digits: str) -> str:
    """Too short or too long for the form it is written in (``05…`` 10 digits, ``966…`` 12, ``00966…`` 14, else 9)."""
    expected = next((9 + len(p) for p in ("00966", "966", "0") if digits.startswith(p)), 9)
    how = "too short" if len(digits) < expected else "too long"
    return (
        f"phone number is {how} ({len(digits)} digits) to be a Saudi mobile: a Saudi mobile has 9 digits "
        "(5XXXXXXXX), written 05XXXXXXXX or +966 5XXXXXXXX"
    )


def mask_phone(phone: str | None) -> str:
    """``512345678`` -> ``5*****678``: enough for support to recognise, not enough to identify."""
    if not phone:
        return ""
    phone = str(phone)
    if len(phone) < 9:  # a short (malformed) number: showing 4 of its digits would show most of it
        return "*" * max(0, len(phone) - 2) + phone[-2:] if len(phone) > 4 else "*" * len(phone)
    return phone[0] + "*" * (len(phone) - 4) + phone[-3:]
