"""Include in the shop's URLconf, e.g. ``path("loyalty/", include("django_points_earn.urls"))``; register
``https://<shop>/loyalty/webhooks/points/<account>/`` with Points (``manage.py points_webhook_register``)."""

from django.urls import path

from .webhooks import points_webhook

app_name = "django_points_earn"
urlpatterns = [path("webhooks/points/<str:account>/", points_webhook, name="points_webhook")]
