"""List filters and date drill-down for the notification admin that stay fast on a big log.

Django's stock pieces read the whole notification table on every page load:
RelatedOnlyFieldListFilter runs a DISTINCT over it to find the stations and boxes in
use, AllValuesFieldListFilter a SELECT DISTINCT per column, and the date hierarchy a
DISTINCT date truncation (on SQLite a Python function called once per row: 1.4 s for
100,000 rows). Everything here answers from the equipment tables or from index seeks,
so the cost follows the number of stations, values and dates shown, not the rows.
"""

import datetime
from collections import Counter

from django.contrib import admin
from django.db import connections
from django.db.models import Max, Min, QuerySet
from django.utils import timezone

from stations.models import Box

STATION_PARAM = "station__id__exact"
# Most periods probed in one query. The admin asks for the days of a month, the months
# of a year, or the years the log spans; anything longer gets Django's own query.
MAX_PERIODS = 400


class BoxListFilter(admin.RelatedFieldListFilter):
    """Boxes from the box table (not a DISTINCT over the log); only the selected
    station's boxes once a station is chosen, so the list stays short on a big depot."""

    def field_choices(self, field, request, model_admin):
        boxes = Box.objects.select_related("station").order_by("station__code", "code")
        station = request.GET.get(STATION_PARAM, "")
        if station.isdigit():
            return [(box.pk, box.code) for box in boxes.filter(station_id=int(station))]
        boxes = list(boxes)
        # Box codes are unique per station only: name the station when a code repeats.
        repeated = {code for code, n in Counter(box.code for box in boxes).items() if n > 1}
        return [
            (box.pk, f"{box.code} ({box.station.code})" if box.code in repeated else box.code)
            for box in boxes
        ]


def indexed_distinct_values(model, field_name: str, using: str) -> list:
    """The distinct non-null values of an indexed column, in order, by walking its index.

    SELECT DISTINCT reads every row (or index entry); this recursive query makes one
    index seek per distinct value instead ("loose index scan"), so five fault types
    cost five seeks whether the log holds a thousand rows or ten million. Works on
    SQLite and PostgreSQL; needs an index on the column (fault_type and action have one).
    """
    connection = connections[using]
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.get_field(field_name).column)
    # Only quoted names from the model's metadata go into the text; no user input.
    sql = (
        f"WITH RECURSIVE walk(value) AS ("  # noqa: S608
        f" SELECT MIN({column}) FROM {table}"
        f" UNION ALL"
        f" SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > walk.value)"
        f" FROM walk WHERE walk.value IS NOT NULL"
        f") SELECT value FROM walk WHERE value IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]


class IndexedValuesListFilter(admin.AllValuesFieldListFilter):
    """AllValuesFieldListFilter (every value of the column, whatever the other filters)
    with its SELECT DISTINCT replaced by indexed_distinct_values."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        # The parent left an unevaluated DISTINCT queryset here; it never runs.
        using = model_admin.get_queryset(request).db
        self.lookup_choices = indexed_distinct_values(model, field.name, using)


class DateDrillDownQuerySet(QuerySet):
    """The queryset the notification changelist works on. Only the two calls Django's
    date_hierarchy makes are done differently, and they return the same results.

    - aggregate(first=Min(f), last=Max(f)): asking for both in one query makes SQLite
      scan every row (20 ms per 100,000 rows); a lone MIN or MAX is one index seek. The
      result is kept on this queryset object: the hierarchy asks, then datetimes()
      needs the same bounds.
    - datetimes(f, kind): instead of truncating every row's date to DISTINCT them, list
      the years, months or days between the first and the last row and ask, in one
      query, whether each has a row: one index range seek per period.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._min_max = {}  # a filtered or cloned queryset starts afresh

    def aggregate(self, *args, **kwargs):
        if args or not kwargs or any(type(e) not in (Min, Max) for e in kwargs.values()):
            return super().aggregate(*args, **kwargs)
        for alias, expression in kwargs.items():
            if (alias, expression) not in self._min_max:
                value = super().aggregate(**{alias: expression})[alias]
                self._min_max[alias, expression] = value
        return {alias: self._min_max[alias, expression] for alias, expression in kwargs.items()}

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        stock = kind not in ("year", "month", "day") or order != "ASC" or tzinfo is not None
        if stock or self.query.distinct or self.query.is_sliced:
            return super().datetimes(field_name, kind, order, tzinfo)
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        first, last = (timezone.localtime(bounds[key]) for key in ("first", "last"))
        periods = _periods(first, last, kind)
        if periods is None:  # not a range the admin asks for; keep the stock query
            return super().datetimes(field_name, kind, order, tzinfo)
        manager = self.model._default_manager.db_manager(self.db)
        probes = [
            # The period's range goes first in the WHERE clause: SQLite seeks the index
            # with the first range on a column it meets, and the changelist's own
            # drill-down range (the whole month around each day) would make it scan.
            # ORDER BY the date makes PostgreSQL seek too: for LIMIT 1 it would rather
            # start a sequential scan, which on a log (rows stored in time order) reads
            # every row older than the period first.
            (manager.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end}) & self)
            .order_by(field_name)
            .values("pk")[:1]
            for start, end in periods
        ]
        found = _first_values(probes, self.db)
        return [start for (start, _), pk in zip(periods, found, strict=True) if pk is not None]


def _periods(first: datetime.datetime, last: datetime.datetime, kind: str) -> list | None:
    """(start, end) of every year, month or day from first's to last's, as aware datetimes
    in the current time zone, cut the way the __year/__month/__day lookups cut; None
    past MAX_PERIODS."""

    def following(day: datetime.date) -> datetime.date:
        if kind == "year":
            return datetime.date(day.year + 1, 1, 1)
        if kind == "month":
            return datetime.date(day.year + day.month // 12, day.month % 12 + 1, 1)
        return day + datetime.timedelta(days=1)

    def truncate(moment: datetime.datetime) -> datetime.date:
        day = moment.date()
        if kind == "year":
            return day.replace(month=1, day=1)
        if kind == "month":
            return day.replace(day=1)
        return day

    starts = [truncate(first)]
    while starts[-1] <= truncate(last):
        if len(starts) > MAX_PERIODS:
            return None
        starts.append(following(starts[-1]))
    aware = [timezone.make_aware(datetime.datetime.combine(d, datetime.time())) for d in starts]
    return list(zip(aware, aware[1:], strict=False))


def _first_values(querysets: list, using: str) -> list:
    """The first value of each one-column queryset (None when it has no row), all in a
    single round trip: SELECT (subquery 1), (subquery 2), ..."""
    if not querysets:
        return []
    connection = connections[using]
    parts, params = [], []
    for queryset in querysets:
        sql, sub_params = queryset.query.get_compiler(using=using).as_sql()
        parts.append(f"({sql})")
        params.extend(sub_params)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        return list(cursor.fetchone())
