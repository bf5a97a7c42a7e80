"""Include in the shop's URLconf, e.g. ``path("loyalty/", include("django_points_earn.urls"))``.

Every platform that declares a ``webhook_view`` gets ``webhooks/<platform>/<account>/`` (URL name
``<platform>_webhook``); register ``https://<shop>/loyalty/webhooks/<platform>/<account>/`` with the platform
(``manage.py points_webhook_register`` does it for the platforms that can). ``metrics/`` serves the Prometheus
metrics (docs/operations.md)."""

from django.urls import path
from django.utils.module_loading import import_string

from .metrics_view import scrape
from .providers import platforms

app_name = "django_points_earn"
urlpatterns = [
    path(f"webhooks/{name}/<str:account>/", import_string(backend.webhook_view), name=f"{name}_webhook")
    for name, backend in platforms().items()
    if backend.webhook_view
]
# Prometheus metrics (docs/operations.md): a bearer token or the view_earningrecord permission.
urlpatterns.append(path("metrics/", scrape, name="metrics"))
