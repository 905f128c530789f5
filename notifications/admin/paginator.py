"""A changelist paginator that does not count the whole notification log on every page.

Django's Paginator runs SELECT COUNT(*) on every page view. SQLite answers an
unfiltered count by walking the b-tree of the smallest index without reading rows
(measured: well under 1 ms for 100,000 rows), so it keeps the exact count. PostgreSQL
reads every row to count (MVCC): 20-45 ms per 100,000 rows, growing with the log, on
every click. There the unfiltered list uses the planner's row estimate instead, which
autovacuum and ANALYZE keep current. Filtered lists (a station, a search, a day) keep
exact counts: they are what people read, and the same filter drives the page query.
"""

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db import connections
from django.utils.functional import cached_property

# Below this, counting is cheap and the estimate is least reliable (PostgreSQL reports
# -1 for a table never vacuumed or analyzed).
ESTIMATE_FROM_ROWS = 10_000


def estimated_row_count(queryset) -> int | None:
    """PostgreSQL's estimate of the rows of an unfiltered queryset's table; None when
    the queryset is filtered, the database is not PostgreSQL or the estimate is small."""
    if queryset.query.where or queryset.query.is_sliced or queryset.query.distinct:
        return None
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
            [connection.ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    estimate = int(row[0]) if row else -1
    return estimate if estimate >= ESTIMATE_FROM_ROWS else None


class EstimatedCountPaginator(Paginator):
    """Paginator whose count is PostgreSQL's estimate on an unfiltered big table.

    With an estimate, the page links go up to the estimated last page, a page past the
    real end is empty instead of an error, and pages are never trimmed to the estimate.
    """

    estimated = False

    @cached_property
    def count(self):
        estimate = estimated_row_count(self.object_list)
        if estimate is not None:
            self.estimated = True
            return estimate
        return self.object_list.count()

    def validate_number(self, number):
        if not self.estimated:
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from None
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return number

    def page(self, number):
        if not self.estimated:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)
