"""What a shop would write without the app: the baselines the benchmarks compare against.

- :func:`post_in_callback`: an ``order_paid`` receiver that calls Points synchronously inside the payment callback
  (inside the shop's transaction).
- :func:`earn_order`: one RQ job per paid order that loads the order, calls Points straight away with ``requests``
  and retries on 429 (sleeping with a short, jittered, doubling backoff) until it gets another answer.

Both send the same body as the app (built by the same adapter), so only the way of sending differs. They write
nothing to the app's tables; the job reports its call times to Redis so the benchmark can measure the same window
as for the app (first call started → last call finished).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import requests

NAIVE_TIMINGS_KEY = "points-bench:naive-calls"
MAX_TRIES = 50


def _body_and_target(order: Any) -> tuple[dict[str, Any], str, dict[str, str]]:
    from django.conf import settings

    from django_points_earn.adapters import get_adapter
    from django_points_earn.conf import get_settings
    from django_points_earn.providers import get_backend

    request = get_adapter().build_request(order)
    account = get_settings().account(request.account)
    body = get_backend(account).build_payload(request)
    key = settings.POINTS_EARN["ACCOUNTS"][request.account]["API_KEY"]
    return body, f"{account.base_url}/orders/earning", {"x-api-key": key, "Accept": "application/json"}


def post_in_callback(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """The naive checkout: the HTTP call happens inside the shop's transaction, before the customer sees a page."""
    body, url, headers = _body_and_target(order)
    requests.post(url, json=body, headers=headers, timeout=(3.05, 10))


def enqueue_after_commit(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """The naive queue: one job per paid order, enqueued after the commit."""
    import django_rq
    from django.db import transaction

    order_id = order.pk
    transaction.on_commit(lambda: django_rq.get_queue("default").enqueue(earn_order, order_id, result_ttl=0))


def earn_order(order_id: int) -> int:
    """Call Points for one order; on 429, wait a little and call again. Returns the final HTTP status."""
    import django_rq

    from tests.shop.models import Order

    order = Order.objects.prefetch_related("lines").get(pk=order_id)
    body, url, headers = _body_and_target(order)
    first = time.time()
    rate_limited = 0
    status = 0
    for attempt in range(MAX_TRIES):
        status = requests.post(url, json=body, headers=headers, timeout=(3.05, 10)).status_code
        if status != 429:
            break
        rate_limited += 1
        time.sleep(random.uniform(0, min(1.0, 0.05 * 2**attempt)))
    timing = {"order": order_id, "first": first, "last": time.time(), "status": status, "429": rate_limited}
    django_rq.get_connection("default").rpush(NAIVE_TIMINGS_KEY, json.dumps(timing))
    return status
