"""The API key never reaches the database, a log line, an exception text or an admin page."""

import logging

import pytest
from django.apps import apps
from django.conf import settings
from django.core import serializers

from django_points_earn.models import EarningRecord
from tests.conftest import run_worker, settle

pytestmark = pytest.mark.django_db(transaction=True)


def test_api_key_is_nowhere_after_a_rough_run(place_order, points_api, caplog, client, django_user_model):
    caplog.set_level(logging.DEBUG)  # everything, urllib3 and requests included
    key = settings.POINTS_API_KEY
    points_api.script("429", "slow", "500", "html", "truncated", "reset")
    for n in range(8):
        place_order(f"SO-{n}", phone="0512345678" if n != 3 else "bad")
    settle()
    points_api.revoke(key)
    place_order("SO-REVOKED")
    run_worker()
    assert EarningRecord.objects.get(order_number="SO-REVOKED").status == "blocked"

    dump = serializers.serialize(
        "json", [obj for model in apps.get_models() if model._meta.managed for obj in model.objects.all()]
    )
    assert "SO-REVOKED" in dump  # the dump really holds our records
    assert key not in dump

    admin = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    client.force_login(admin)
    pages = [client.get("/admin/django_points_earn/earningrecord/").content.decode()]
    for record in EarningRecord.objects.all():
        pages.append(client.get(f"/admin/django_points_earn/earningrecord/{record.pk}/change/").content.decode())
    assert all(key not in page for page in pages)
    assert "512345678" not in pages[0]  # phones are masked in the list

    logs = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert "SO-REVOKED" in logs
    assert key not in logs
    assert "512345678" not in logs  # masked in log lines too


def test_account_config_repr_hides_the_key():
    from django_points_earn.conf import get_settings

    account = get_settings().account("main")
    assert settings.POINTS_API_KEY not in repr(account)
    assert settings.POINTS_API_KEY not in repr(get_settings())
