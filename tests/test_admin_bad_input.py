"""Issue 13 items 8 and 10: hostile query strings never answer 500, deep pages never count millions of rows, and
every custom admin view needs the permission to see earnings (not only the action's own permission)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from django_points_earn.admin_tools import paginator
from django_points_earn.models import AccountState, EarningRecord
from tests.admin_helpers import CHANGELIST, DASHBOARD, action_url, earning, make_failed, page

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def web(admin_user):
    client = Client(raise_request_exception=False)  # a 500 is an answer here, not an exception in the test
    client.force_login(admin_user)
    return client


def _limits(queries) -> list[int]:
    return [
        int(n) for q in queries for n in re.findall(r"LIMIT (\d+)", q["sql"].upper()) if "COUNT(" in q["sql"].upper()
    ]


@pytest.mark.parametrize("p", ["99999999999999999999", "9" * 5000, "100000", "0", "-5", "abc", "1e5", ""])
def test_any_page_number_answers_a_page_and_counts_at_most_the_cap(web, place_order, p):
    place_order("SO-1")
    with CaptureQueriesContext(connection) as queries:
        response = web.get(CHANGELIST, {"p": p})
    assert response.status_code == 200, response.content[:300]
    assert {r.order_number for r in response.context["cl"].result_list} == {"SO-1"}
    assert _limits(queries) and max(_limits(queries)) <= paginator.MAX_COUNT + 1  # was 5,000,501 for ?p=100000


def test_a_page_past_the_end_shows_the_last_page(web, place_order, monkeypatch):
    monkeypatch.setattr(admin.site._registry[EarningRecord], "list_per_page", 2)
    for n in range(5):
        place_order(f"SO-{n}")
    for p in ("4", "99", "99999999999999999999"):
        response = web.get(CHANGELIST, {"p": p})
        assert response.status_code == 200
        assert response.context["cl"].page_num == 3
        assert [r.order_number for r in response.context["cl"].result_list] == ["SO-0"]
    assert web.get(CHANGELIST, {"p": "-1"}).context["cl"].page_num == 1


@pytest.mark.parametrize(
    "query",
    ["account=%00", "platform=%00", "account=ma%00in", "status__exact=%00", "q=%00", "q=SO-%001", "attention=%00"],
)
def test_nul_in_the_query_string_is_400_not_500_on_every_database(web, place_order, query):
    place_order("SO-1")
    response = web.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 400, response.content[:300]


@pytest.mark.parametrize(
    "url,expected",
    [
        ("/admin/django_points_earn/accountstate/?account=%00", 400),
        ("/admin/django_points_earn/accountstate/%00/change/", 302),  # "no such account", back to the list
        (DASHBOARD + "resume/%00/", 404),
        (CHANGELIST + "%00/change/", 302),
        (CHANGELIST + "%00/retry/", 302),
        (CHANGELIST + "99999999999999999999999/change/", 302),
    ],
)
def test_nul_or_huge_ids_in_other_admin_urls_are_not_500(web, url, expected):
    AccountState.objects.create(account="main", paused=True, reason="API key refused")
    assert web.get(url).status_code == expected


def test_filters_match_nothing_for_a_value_no_column_can_hold(place_order):
    from django_points_earn.admin_tools.filters import _exact

    place_order("SO-1")
    qs = EarningRecord.objects.all()
    assert list(_exact(qs, "account", "ma\x00in")) == []
    assert _exact(qs, "account", "main").count() == 1 and _exact(qs, "account", "").count() == 1


# -- item 10: permissions ----------------------------------------------------------------------------------------
def staff_with_only(django_user_model, *codenames: str):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("only", "only@example.com", "pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_points_earn", codename__in=codenames)
    )
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


ACTIONS = ["retry", "verify", "resolve", "correct", "reverse"]


@pytest.mark.parametrize("action", ACTIONS)
def test_an_action_permission_without_view_permission_shows_nothing(django_user_model, place_order, action):
    record = make_failed(earning(place_order("SO-SECRET", phone="0551234567")))
    client = staff_with_only(django_user_model, f"{action}_earningrecord")
    for response in (
        client.get(action_url(record, action)),
        client.post(action_url(record, action), {"confirm": "yes"}),
    ):
        assert response.status_code == 403
        assert b"SO-SECRET" not in response.content and b"5******567" not in response.content
    assert client.get(page(record)).status_code == 403
    record.refresh_from_db()
    assert record.status == "failed"  # nothing was done either


def test_dashboard_buttons_need_view_permission_too(django_user_model, place_order):
    AccountState.objects.create(account="main", paused=True, reason="API key refused")
    client = staff_with_only(django_user_model, "retry_earningrecord", "resume_accountstate")
    assert client.get(DASHBOARD).status_code == 403
    assert client.post(DASHBOARD + "reconcile/").status_code == 403
    resume = client.get(DASHBOARD + "resume/main/")
    assert resume.status_code == 403 and b"API key refused" not in resume.content
    assert client.post(DASHBOARD + "resume/main/", {"confirm": "yes"}).status_code == 403
    assert AccountState.objects.get().paused


def test_with_view_permission_the_action_pages_still_work(django_user_model, place_order):
    record = make_failed(earning(place_order("SO-OK")))
    client = staff_with_only(django_user_model, "view_earningrecord", "retry_earningrecord")
    assert client.get(action_url(record, "retry")).status_code == 200
    assert client.get(action_url(record, "resolve")).status_code == 403  # no resolve permission: refused page


@pytest.fixture
def example_urls(settings, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "example_project"))
    sys.modules.pop("shop_site.urls", None)
    settings.ROOT_URLCONF = "shop_site.urls"
    yield
    sys.modules.pop("shop_site.urls", None)


def test_example_project_shows_the_queue_dashboard_to_superusers_only(example_urls, django_user_model, admin_user):
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("agent", "a@example.com", "pw", is_staff=True))
    superuser = Client()
    superuser.force_login(admin_user)
    for url in ("/django-rq/", "/django-rq/queues/0/", "/django-rq/workers/0/", "/django-rq/stats.json/"):
        answer = staff.get(url)
        assert answer.status_code == 302 and "/admin/login/" in answer["Location"], url
    assert superuser.get("/django-rq/").status_code == 200


def test_example_project_turns_off_django_rqs_admin_copy(monkeypatch):
    """django-rq registers the same dashboard in the admin for every staff member unless told not to."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "example_project"))
    monkeypatch.setenv("DEBUG", "1")
    sys.modules.pop("shop_site.settings", None)
    try:
        shop_settings = importlib.import_module("shop_site.settings")
    finally:
        sys.modules.pop("shop_site.settings", None)
    assert shop_settings.RQ_SHOW_ADMIN_LINK is False
