"""A paginator that never counts the whole table: ``COUNT(*)`` over a million rows on every page load is slow."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.main import ChangeList
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

# Count at least this many rows, and always a few pages beyond the one asked for, but never more than MAX_COUNT
# (``?p=100000`` must not make one page load count five million rows): pages beyond it show the last one counted.
COUNT_LIMIT = 10_000
PAGES_AHEAD = 10
MAX_COUNT = 100_000


class CappedCountPaginator(Paginator):
    """Counts at most ``limit + 1`` rows (``SELECT COUNT(*) FROM (… LIMIT n)``); :attr:`capped` says when there
    are more. The pages up to the limit work as usual; the list says "more than N" instead of an exact total."""

    def __init__(self, object_list: QuerySet, per_page: int, *, limit: int = COUNT_LIMIT, **kwargs) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.limit = limit

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: self.limit + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.limit

    def page(self, number: Any):
        """Like :meth:`Paginator.page`, but a page past the end is the last page and a bad number the first."""
        try:
            number = self.validate_number(number)
        except PageNotAnInteger:
            number = 1
        except EmptyPage:
            number = self.num_pages if _as_int(number) > 1 else 1
        return super().page(number)


class CappedChangeList(ChangeList):
    """The admin list with the page number clamped: ``?p=0``, ``?p=-5``, ``?p=99999999999999999999`` and a page
    past the end all show a real page (never a database overflow, never the "?e=1" error redirect)."""

    def get_results(self, request: HttpRequest) -> None:
        self.page_num = min(max(1, self.page_num), MAX_COUNT)
        super().get_results(request)
        if self.multi_page:
            self.page_num = min(self.page_num, self.paginator.num_pages)


def _as_int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 1


def limit_for_page(page: object, per_page: int) -> int:
    """How far to count for a request of page ``page`` (1-based, as in the admin's ``?p=``)."""
    number = min(max(1, _as_int(page)), MAX_COUNT)
    return min(MAX_COUNT, max(COUNT_LIMIT, (number + PAGES_AHEAD) * per_page))
