import pytest

from django_points_earn.phones import InvalidPhone, mask_phone, normalize_ksa_mobile


@pytest.mark.parametrize(
    "raw",
    [
        "+966512345678",
        "00966512345678",
        "966512345678",
        "0512345678",
        "512345678",
        "+966 51 234 5678",
        "051-234-5678",
        "(051) 234 5678",
        "٠٥١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "۰۵۱۲۳۴۵۶۷۸",  # Eastern Arabic-Indic (Persian) digits
        "\u200e+966 512345678",  # left-to-right mark pasted from a phone UI
        512345678,
    ],
)
def test_every_documented_form_normalises(raw):
    assert normalize_ksa_mobile(raw) == "512345678"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "no phone number"),
        ("", "no phone number"),
        ("   ", "no phone number"),
        ("12345", r"too short \(5 digits\)"),
        ("0112345678", "not a Saudi mobile"),  # Riyadh landline
        ("+971501234567", "not Saudi"),  # UAE
        ("+44 7700 900123", "not Saudi"),
        ("05123456789", r"too long \(11 digits\)"),
        ("05x2345678", "characters other than digits"),
        ("412345678", "not a Saudi mobile"),
        (["0512345678"], "must be text"),
    ],
)
def test_invalid_numbers_say_why(raw, reason):
    with pytest.raises(InvalidPhone, match=reason):
        normalize_ksa_mobile(raw)


def test_mask_keeps_first_and_last_three():
    assert mask_phone("512345678") == "5*****678"
    assert mask_phone("") == ""
    assert mask_phone("123") == "***"
    assert mask_phone("12345") == "***45"  # a short malformed number keeps only its last two digits
