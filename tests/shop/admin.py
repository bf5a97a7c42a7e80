"""The test shop's own Order admin, with the app's read-only earning columns (EarningForOrderMixin)."""

from django.contrib import admin

from django_points_earn.admin_tools import EarningForOrderMixin

from .models import Order


@admin.register(Order)
class OrderAdmin(EarningForOrderMixin, admin.ModelAdmin):
    list_display = ["number", "account", "phone"]
    list_per_page = 20
    search_fields = ["number"]
