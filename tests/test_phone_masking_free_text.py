"""Issue 13 item 11: a Saudi mobile number typed into free text (an address line, a note, an error) is masked
wherever stored request text is shown to staff (the earning page, the attempts' bodies, reasons) and in the logs."""

from __future__ import annotations

import logging

import pytest

from django_points_earn.phones import mask_phones_in_text
from tests.admin_helpers import earning, page
from tests.conftest import run_worker

SPELLINGS = [
    "0551234567",
    "551234567",
    "966551234567",
    "00966551234567",
    "+966551234567",
    "+966 55 123 4567",
    "+966-55-123-4567",
    "055 123 4567",
    "055-123-4567",
    "(055) 123 4567",
    "05 5123 4567",
    "\u0660\u0665\u0665\u0661\u0662\u0663\u0664\u0665\u0666\u0667",  # Arabic-Indic 0551234567
    "\u06f0\u06f5\u06f5 \u06f1\u06f2\u06f3 \u06f4\u06f5\u06f6\u06f7",  # Eastern Arabic-Indic, spaced
    "\u200e+966 55 123 4567",  # with the left-to-right mark a phone UI pastes
]


@pytest.mark.parametrize("phone", SPELLINGS)
def test_every_spelling_is_masked_inside_text(phone):
    text = f"Olaya St 12, building 7, call {phone} at the gate"
    masked = mask_phones_in_text(text)
    assert "5*****567" in masked
    assert masked.startswith("Olaya St 12, building 7, call ") and masked.endswith(" at the gate")
    for digits in ("1234567", "123 4567", "123-4567", "\u0661\u0662\u0663\u0664\u0665\u0666\u0667"):
        assert digits not in masked


@pytest.mark.parametrize(
    "text",
    [
        "3f5a1c2e-5123-4567-8901-551234567890",  # a platform uuid
        "2026-11-01T05:12:34.512345+03:00",
        "SO-0551234567A",  # part of a longer order reference
        "order 55123456 (8 digits)",
        "landline 0112345678",
        "5512345678 (ten digits)",
        "total 1,551.50 SAR",
    ],
)
def test_other_numbers_are_left_alone(text):
    assert mask_phones_in_text(text) == text


ADDRESS = "Olaya St, ring +966 55 987 6543 at the gate"
FULL = ("987 6543", "9876543", "987-6543")


@pytest.mark.django_db(transaction=True)
def test_phone_in_free_text_is_masked_on_the_earning_page(admin_client, place_order, points_api):
    order = place_order(
        "SO-FREE",
        phone="0512345678",
        customer_name=ADDRESS,
        lines=[("Gift wrap, deliver to 0559876543", "10.00", 1), ("Tea", "20.00", 1)],
    )
    run_worker()
    record = earning(order)
    assert record.attempt_set.exists() and "987 6543" in str(record.request)  # stored as the shop gave it
    html = admin_client.get(page(record)).content.decode()
    assert "5*****543" in html and "Olaya St, ring" in html
    for digits in FULL:
        assert digits not in html, digits


@pytest.mark.django_db(transaction=True)
def test_phone_in_an_adapter_error_is_masked_in_the_reason_and_the_log(admin_client, place_order, monkeypatch, caplog):
    from tests.shop.adapters import ShopAdapter

    def broken(self, order):
        raise ValueError(f"cannot ship to {ADDRESS!r}")

    monkeypatch.setattr(ShopAdapter, "get_lines", broken)
    with caplog.at_level(logging.INFO, logger="django_points_earn"):
        order = place_order("SO-ERR")
    record = earning(order)
    assert "987 6543" in record.status_reason  # the record keeps what the shop said
    assert "order adapter failed" in caplog.text and "5*****543" in caplog.text  # the traceback is masked too
    for digits in FULL:
        assert digits not in caplog.text
    html = admin_client.get(page(record)).content.decode()
    assert "5*****543" in html
    for digits in FULL:
        assert digits not in html
