"""Saudi mobile numbers: normalisation to the ``5XXXXXXXX`` form Points expects, and masking for display."""

from __future__ import annotations

import logging
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


# A Saudi mobile number inside free text (an address line, a note, an error): +966 / 00966 / 966 / 0 or nothing,
# then 5 and eight digits, in ASCII or Arabic-Indic digits, with one space, dash or direction mark (or a closing
# bracket: "(055) 123 4567") between digits. Not inside a longer run of digits or letters (an id, a uuid).
_D = "0-9\u0660-\u0669\u06f0-\u06f9"
_SEP = "(?:[ \\-\u00a0\u200e\u200f]|\\) ?)?"
_AFTER_COUNTRY = "[ \\-\u00a0\u200e\u200f(]{0,2}"


def _digit(ascii_digit: str) -> str:
    n = int(ascii_digit)
    return f"[{n}{chr(0x0660 + n)}{chr(0x06F0 + n)}]"


_COUNTRY = _SEP.join(_digit(d) for d in "966")
_IN_TEXT = re.compile(
    rf"(?<![{_D}A-Za-z+])"
    rf"(?:(?:\+|{_digit('0')}{_digit('0')}){_SEP}{_COUNTRY}{_AFTER_COUNTRY}|{_COUNTRY}{_AFTER_COUNTRY}|{_digit('0')}{_SEP})?"
    rf"{_digit('5')}(?:{_SEP}[{_D}]){{8}}"
    rf"(?![{_D}A-Za-z])"
)


def mask_phones_in_text(text: str) -> str:
    """Every Saudi mobile number in ``text`` masked as :func:`mask_phone` shows it (``5*****678``); the rest
    unchanged. For stored request text shown to staff or logged, where a phone may sit in any field."""
    if not text or not isinstance(text, str):
        return text

    def masked(found: re.Match[str]) -> str:
        try:
            return mask_phone(normalize_ksa_mobile(found.group()))
        except InvalidPhone:
            return found.group()

    return _IN_TEXT.sub(masked, text)


class MaskPhonesFilter(logging.Filter):
    """Masks Saudi mobile numbers in every record of the app's logger: its message, its arguments (an error
    quoting an address line) and its traceback. Installed by the app's ``ready()``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it to the handler to report
            return True
        masked = mask_phones_in_text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_phones_in_text(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_filter(logger_name: str = "django_points_earn") -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, MaskPhonesFilter) for f in logger.filters):
        logger.addFilter(MaskPhonesFilter())
