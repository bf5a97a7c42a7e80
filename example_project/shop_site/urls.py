"""The shop's URLs: Django admin (where the merchant sees every earning) and django-rq's queue dashboard."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
]
