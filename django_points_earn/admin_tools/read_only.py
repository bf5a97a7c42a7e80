"""The base of the admin pages that show rows without letting anyone edit them (accounts, refunds, deliveries)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse

from .filters import refuse_nul


class ReadOnlyAdmin(admin.ModelAdmin):
    """No add, change or delete: what these rows say is written by the app alone. ``exact_search`` names the
    fields the search box matches exactly (indexed lookups, never a scan); a NUL in the query string is a 400."""

    exact_search: tuple[str, ...] = ()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term or not self.exact_search:
            return super().get_search_results(request, queryset, search_term)
        match = Q()
        for name in self.exact_search:
            match |= Q(**{name: term})
        return queryset.filter(match), False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        refuse_nul(request)
        return super().changelist_view(request, extra_context)
