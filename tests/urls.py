from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls), path("loyalty/", include("django_points_earn.urls"))]
