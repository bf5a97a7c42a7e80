"""The refunds and webhook deliveries lists in a real browser (headless Debian Chromium, Playwright): an agent opens
both, reads a delivery's payload with the phone masked, and applies it again from the list."""

from __future__ import annotations

import pytest

from django_points_earn.models import EarningRecord, Reversal, Status, WebhookDelivery
from django_points_earn.phones import mask_phone
from django_points_earn.signals import order_refunded
from tests.conftest import settle
from tests.shop.models import Order
from tests.test_admin_browser import PASSWORD, browser, login  # noqa: F401  (``browser`` is a fixture)
from tests.test_admin_reversals_webhooks import DELIVERIES, REVERSALS, early_delivery  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_agent_opens_both_lists_and_applies_a_delivery_again(
    browser,  # noqa: F811
    live_server,
    early_delivery,  # noqa: F811
    place_order,
    django_user_model,
):
    refunded = place_order("SO-RMA", lines=[("Abaya", "115.00", 1)])
    settle()
    order_refunded.send(sender=Order, order=refunded, amount=None, reason="returned", refund_id="RMA-9")
    settle()
    assert Reversal.objects.get().status == "reversed"
    django_user_model.objects.create_superuser("agent", "agent@example.com", PASSWORD)
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")

    tab = login(context, live_server, "agent", REVERSALS)
    row = tab.locator("#result_list tbody tr", has_text="RMA-9")
    assert row.count() == 1 and row.locator(".pe-badge").get_attribute("data-state") == "reversed"
    row.locator("a", has_text="SO-RMA").click()  # the order number leads to the earning's page
    tab.wait_for_load_state()
    assert f"/earningrecord/{EarningRecord.objects.get(order_number='SO-RMA').pk}/change/" in tab.url

    tab.goto(live_server.url + DELIVERIES)
    assert tab.locator("#result_list tbody tr", has_text="SO-LATE").count() == 1
    tab.locator("#result_list tbody tr", has_text="SO-LATE").locator("th a").click()  # its received time
    tab.wait_for_load_state()
    payload = tab.locator("#pe-payload").inner_text()
    assert mask_phone("0551234567") in payload and "0551234567" not in payload

    tab.goto(live_server.url + DELIVERIES)
    tab.check(f"input[name=_selected_action][value='{early_delivery.pk}']")
    tab.select_option("select[name=action]", "apply_again_selected")
    tab.click("button[name=index]")
    tab.wait_for_load_state()
    tab.click("#pe-confirm")
    tab.wait_for_load_state()
    assert "Deliveries applied again: 1." in tab.locator(".messagelist").inner_text()
    assert EarningRecord.objects.get(order_number="SO-LATE").status == Status.AWARDED
    assert WebhookDelivery.objects.get(pk=early_delivery.pk).result.startswith("earning is awarded")
    context.close()
