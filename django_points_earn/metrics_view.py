"""The scrape endpoint, ``metrics/`` in ``django_points_earn.urls``: for a shop without django-prometheus, or with
RQ's forking workers (multiprocess mode). A scraper sends ``Authorization: Bearer <POINTS_EARN["METRICS"]["TOKEN"]>``
(compared in constant time, never logged); without a token setting only a signed-in user with the
``view_earningrecord`` permission may read it."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from . import metrics
from .conf import get_settings

VIEW_PERM = "django_points_earn.view_earningrecord"


def _allowed(request: HttpRequest) -> bool:
    token = str(get_settings().metrics.get("TOKEN") or "")
    given = request.headers.get("Authorization", "")
    if token and given.startswith("Bearer "):
        return hmac.compare_digest(given.removeprefix("Bearer ").strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.has_perm(VIEW_PERM))


@require_GET
def scrape(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    if not metrics.available():
        return HttpResponse(
            "metrics are off: install prometheus_client (django-points-earn[metrics]) and keep "
            'POINTS_EARN["METRICS"]["ENABLED"] true\n',
            status=404,
            content_type="text/plain",
        )
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)
