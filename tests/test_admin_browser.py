"""The admin in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright, against a live
server, a real worker process and the Points sandbox over HTTP.

Skipped only where Chromium or Playwright is missing *and* this is not CI (``CI=true`` fails instead).
``POINTS_SCREENSHOTS=docs/screenshots`` saves the README's screenshots; by default they go to a temporary folder.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_points_earn.models import EarningRecord, Status
from tests.admin_helpers import CHANGELIST, DASHBOARD, action_url, page, staff
from tests.conftest import ROOT, start_worker, worker_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHROMIUM = os.environ.get("POINTS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("POINTS_SCREENSHOTS") or tmp_path)
    if not folder.is_absolute():
        folder = ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stop_worker(proc) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except Exception:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


@pytest.fixture
def shop(place_order, sandbox, sandbox_server) -> Iterator[dict]:
    """A worker sending to the sandbox over HTTP, and a morning's worth of earnings in every state."""
    worker = start_worker(
        name=f"browser-{time.monotonic_ns()}", env=worker_env(POINTS_BASE_URL=sandbox_server.points_base_url)
    )
    try:
        sandbox.set_faults(rate_5xx=1.0)  # the platform is down: these use up their attempts and fail
        for number in ("SO-1041", "SO-1042"):
            place_order(number, phone="0553334445")
        wait_for(lambda: EarningRecord.objects.filter(status=Status.FAILED).count() == 2, 60, "two failures")
        sandbox.set_faults(rate_5xx=0, latency_ms=40, latency_jitter_ms=60)  # back, with realistic latency
        sandbox.script("429")
        for n, phone in enumerate(["0551112223", "+966 55 444 5556", "0567778889", "0598887776", "0541234567"]):
            place_order(f"SO-{1043 + n}", phone=phone, customer_name="Noura")
        place_order("SO-1048", phone="0500000003")  # not yet a Points member: pending activation
        place_order("SO-1049", phone="0512 34")  # not a mobile number: rejected before any call
        place_order("SO-1050", phone="0559990001", account="branch")  # branch key refused: blocked, paused
        wait_for(
            lambda: not EarningRecord.objects.filter(status__in=[Status.QUEUED, Status.SENDING]).exists(),
            60,
            "the earnings to settle",
        )
        yield {"worker": worker, "sandbox": sandbox}
    finally:
        output = stop_worker(worker)
        if os.environ.get("POINTS_BROWSER_DEBUG"):
            print(output)


def login(context, live_server, username: str, next_url: str):
    # The admin's navigation sidebar starts closed: more room for the list in the screenshots.
    context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    tab = context.new_page()
    tab.goto(f"{live_server.url}/admin/login/?next={next_url}")
    tab.fill("#id_username", username)
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit]")
    tab.wait_for_load_state()
    return tab


def test_agent_filters_failed_earnings_retries_one_and_sees_it_awarded(
    browser, live_server, shop, django_user_model, shots
):
    django_user_model.objects.create_superuser("agent", "agent@example.com", PASSWORD)
    context = browser.new_context(viewport={"width": 1600, "height": 900}, locale="en-US")
    tab = login(context, live_server, "agent", CHANGELIST)
    assert tab.locator("#result_list").is_visible()
    assert "5*****223" in tab.content() and "551112223" not in tab.content()  # masked phones
    tab.screenshot(path=str(shots / "earnings-list.png"))

    tab.locator("#changelist-filter a", has_text="Failed").first.click()
    tab.wait_for_load_state()
    assert "status__exact=failed" in tab.url
    rows = tab.locator("#result_list tbody tr")
    assert rows.count() == 2

    record = EarningRecord.objects.get(order_number="SO-1041")
    tab.check(f"input[name=_selected_action][value='{record.pk}']")
    tab.select_option("select[name=action]", "retry_selected")
    tab.click("button[name=index]")
    tab.wait_for_load_state()
    assert "Send these earnings to the platform again now?" in tab.content()
    tab.click("#pe-confirm")
    tab.wait_for_load_state()
    assert "Queued to be sent again: 1." in tab.locator(".messagelist").inner_text()

    tab.goto(live_server.url + page(record))

    def awarded_on_the_page() -> bool:
        tab.reload()
        return tab.locator("h1 .pe-badge").get_attribute("data-state") == "awarded"

    wait_for(awarded_on_the_page, 30, "the worker to award the retried earning")
    assert tab.locator("#pe-attempts tr.pe-attempt").count() == 6  # five failures, then the award
    last = tab.locator("#pe-attempts tr.pe-attempt").last
    assert last.get_attribute("data-outcome") == "awarded"
    assert "sent again by agent" in last.inner_text()  # the worker's call, at the agent's request
    history = tab.locator("#pe-history").inner_text()
    assert "agent" in history and "sent again from the admin by agent" in history
    tab.screenshot(path=str(shots / "earning-page.png"), full_page=True)
    assert shop["sandbox"].awards("SO-1041") == 1
    assert EarningRecord.objects.get(order_number="SO-1042").status == Status.FAILED  # left alone

    tab.goto(live_server.url + DASHBOARD)
    assert tab.locator("#pe-chart svg rect.pe-bar").count() == 24
    tab.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    context.close()


def test_staff_without_the_permission_is_refused(browser, live_server, shop, django_user_model):
    viewer = staff(django_user_model, "viewer")
    viewer.set_password(PASSWORD)
    viewer.save()
    record = EarningRecord.objects.get(order_number="SO-1041")
    context = browser.new_context(locale="en-US")
    tab = login(context, live_server, "viewer", page(record))
    assert tab.locator("#pe-read-only").is_visible()
    assert tab.locator("#pe-actions").count() == 0

    response = tab.goto(live_server.url + action_url(record, "retry"))
    assert response.status == 403
    assert "You are not allowed to do this" in tab.locator("#pe-refused").inner_text()
    assert "django_points_earn.retry_earningrecord" in tab.content()

    tab.goto(live_server.url + CHANGELIST)
    assert tab.locator("select[name=action]").count() == 0  # no bulk actions to choose from
    assert EarningRecord.objects.get(pk=record.pk).status == Status.FAILED
    context.close()


def test_dashboard_in_arabic_reads_right_to_left(browser, live_server, shop, django_user_model, shots):
    django_user_model.objects.create_superuser("noura", "noura@example.com", PASSWORD)
    context = browser.new_context(viewport={"width": 1600, "height": 900}, locale="ar-SA")
    tab = login(context, live_server, "noura", DASHBOARD)
    assert tab.locator("html").get_attribute("dir") == "rtl"
    assert tab.locator("html").get_attribute("lang") == "ar"
    assert tab.evaluate("getComputedStyle(document.querySelector('#content')).direction") == "rtl"
    text = tab.locator("#content").inner_text()
    assert "لوحة المطابقة" in tab.locator("h1").inner_text()
    assert "تشغيل المطابقة الآن" in text and "الحسابات الموقوفة" in text
    assert "branch" in tab.locator("#pe-paused").inner_text()
    # The chart runs right to left: the oldest hour is the rightmost bar.
    xs = tab.eval_on_selector_all("#pe-chart rect.pe-bar", "bars => bars.map(b => parseFloat(b.getAttribute('x')))")
    assert len(xs) == 24 and xs[0] > xs[-1]
    tab.screenshot(path=str(shots / "dashboard-ar.png"), full_page=True)

    tab.click("#pe-reconcile")  # "run reconcile now", in Arabic
    tab.wait_for_load_state()
    assert "انتهت المطابقة" in tab.locator(".messagelist").inner_text()
    context.close()
