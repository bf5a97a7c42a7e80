"""Issue 13 item 7: bad webhook bodies answer 4xx, never 500, and store nothing half; unknown accounts look like a
wrong secret. Runs on SQLite and PostgreSQL (``DATABASE_URL``): the NUL case is the one PostgreSQL used to 500 on,
and the answer must be the same 400 on both."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import Client

from django_points_earn.models import WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/loyalty/webhooks/points/main/"
SECRET = {"X-Webhook-Secret": settings.POINTS_WEBHOOK_SECRET}


@pytest.fixture
def web():
    return Client(raise_request_exception=False)  # a 500 is an answer here, not an exception in the test


def send(web, body: str | bytes, url: str = URL, headers: dict | None = None):
    return web.post(url, data=body, content_type="application/json", headers=SECRET if headers is None else headers)


def good(number: str = "SO-OK") -> dict:
    return {"event": "approved", "order": {"id": f"uuid-{number}", "order_number": number, "type": "earning"}}


def test_unknown_account_answers_exactly_like_a_wrong_secret(web):
    unknown = send(web, json.dumps(good()), url="/loyalty/webhooks/points/no-such-account/")
    wrong = send(web, json.dumps(good()), headers={"X-Webhook-Secret": "wrong"})
    known_without_secret = send(web, json.dumps(good()), url="/loyalty/webhooks/points/branch/")
    assert unknown.status_code == wrong.status_code == known_without_secret.status_code == 403
    assert unknown.json() == wrong.json() == known_without_secret.json() == {"ok": False, "error": "forbidden"}
    assert send(web, "{}", url="/loyalty/webhooks/points/%00/").status_code == 403
    assert not WebhookDelivery.objects.exists()


BAD_BODIES = [
    ("deep-100k", "[" * 100_000 + "]" * 100_000, "nested more than"),
    ("deep-object-40", '{"event": "approved", "order": ' + '{"a": ' * 40 + "1" + "}" * 41, "nested more than"),
    ("surrogate-event", json.dumps({"event": "approved\ud800", "order": {"order_number": "SO-1"}}), "surrogate"),
    ("surrogate-number", json.dumps({"event": "approved", "order": {"order_number": "SO-\ud800"}}), "surrogate"),
    ("surrogate-key", json.dumps({"event": "approved", "order": {"\udfff": 1}}), "surrogate"),
    ("nul-event", json.dumps({"event": "approved\u0000", "order": {}}), "NUL"),
    ("nul-number", json.dumps({"event": "approved", "order": {"order_number": "SO-\u0000"}}), "NUL"),
    ("nul-reason", json.dumps({"event": "refunded", "order": {"order_number": "SO-1", "reason": "a\u0000b"}}), "NUL"),
    ("nan", '{"event": "refunded", "order": {"refund_points": NaN}}', "not a JSON number"),
    ("infinity", '{"event": "refunded", "order": {"refund_points": -Infinity}}', "not a JSON number"),
    ("float-overflow", '{"event": "refunded", "order": {"refund_points": 1e400}}', "out of range"),
    ("int-5000-digits", '{"event": "refunded", "order": {"refund_points": ' + "9" * 5000 + "}}", "not JSON"),
    ("not-utf8", b'{"event": "approved\xff"}', "not JSON"),
    ("not-json", "not json", "not JSON"),
    ("a-list", "[1, 2]", "not an object"),
    ("no-event", '{"order": {}}', "no event"),
    ("event-not-text", '{"event": 5}', "no event"),
    ("event-blank", '{"event": "  "}', "no event"),
]


@pytest.mark.parametrize("name,body,words", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_body_with_the_right_secret_is_400_and_nothing_is_stored(web, name, body, words):
    answer = send(web, body)
    assert answer.status_code == 400, answer.content[:300]
    assert words in answer.json()["error"]
    assert not WebhookDelivery.objects.exists()
    assert send(web, json.dumps(good())).json() == {"ok": True}  # and the next good delivery is taken as usual
    assert WebhookDelivery.objects.get().order_number == "SO-OK"


def test_body_over_the_cap_is_413_and_not_stored(web, settings):
    from django_points_earn.conf import clear_cache

    settings.POINTS_EARN = {**settings.POINTS_EARN, "WEBHOOK_MAX_BYTES": 2000}
    clear_cache()
    big = good() | {"padding": "x" * 2000}
    answer = send(web, json.dumps(big))
    assert answer.status_code == 413 and "2000 bytes" in answer.json()["error"]
    assert send(web, json.dumps(big), headers={"X-Webhook-Secret": "wrong"}).status_code == 403  # secret first
    assert not WebhookDelivery.objects.exists()
    assert send(web, json.dumps(good())).status_code == 200


def test_default_cap_is_explicit_and_below_djangos_upload_limit(web):
    from django_points_earn.conf import get_settings

    cap = get_settings().webhook_max_bytes
    assert 64 * 1024 <= cap < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    answer = send(web, json.dumps(good() | {"padding": "x" * cap}))
    assert answer.status_code == 413
    assert not WebhookDelivery.objects.exists()


def test_unicode_that_is_storable_is_stored_as_sent(web):
    body = good("طلب-١٢٣") | {"note": "قهوة ☕️🇸🇦", "big": 10**30}
    assert send(web, json.dumps(body)).status_code == 200
    stored = WebhookDelivery.objects.get()
    assert stored.order_number == "طلب-١٢٣"
    assert stored.payload["note"] == "قهوة ☕️🇸🇦" and stored.payload["big"] == 10**30
