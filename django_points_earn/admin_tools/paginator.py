"""A paginator that never counts the whole table: ``COUNT(*)`` over a million rows on every page load is slow."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property

# Count at least this many rows, and always a few pages beyond the one asked for.
COUNT_LIMIT = 10_000
PAGES_AHEAD = 10


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


def limit_for_page(page: object, per_page: int) -> int:
    """How far to count for a request of page ``page`` (1-based, as in the admin's ``?p=``)."""
    try:
        number = max(1, int(str(page)))
    except ValueError:
        number = 1
    return max(COUNT_LIMIT, (number + PAGES_AHEAD) * per_page)
