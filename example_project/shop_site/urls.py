"""The shop's URLs: Django admin (where the merchant sees every earning), django-rq's queue dashboard and the
customer's order page (its loyalty points, and a message once they are awarded).

django-rq's own views let in every staff member (``staff_member_required``): its dashboard can empty queues,
delete and requeue jobs and shows job arguments. A shop's support staff get the earnings admin; the queues are
for superusers only, so every django-rq view is wrapped here (and its admin copy is off: ``RQ_SHOW_ADMIN_LINK``).
"""

from collections.abc import Callable

from django.contrib import admin
from django.contrib.auth.decorators import user_passes_test
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, include, path
from django_rq import urls as rq_urls


def superusers_only(view: Callable) -> Callable:
    return user_passes_test(lambda user: user.is_active and user.is_superuser, login_url="admin:login")(view)


def order_page(request: HttpRequest, number: str) -> HttpResponse:
    """The customer's order page (shop.views), imported when first asked: this URLconf then loads without the
    shop's models (the app's test suite loads it beside its own test shop)."""
    from shop.views import order_page as view

    return view(request, number)


rq_dashboard = [URLPattern(p.pattern, superusers_only(p.callback), p.default_args, p.name) for p in rq_urls.urlpatterns]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("django-rq/", include((rq_dashboard, "django_rq"))),
    path("orders/<str:number>/", order_page, name="order"),  # the customer's order page, with its points
    # Points' webhooks (/loyalty/webhooks/points/<account>/) and the Prometheus metrics (/loyalty/metrics/).
    path("loyalty/", include("django_points_earn.urls")),
]
