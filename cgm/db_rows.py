"""Rows read with a plain cursor, as the ORM would give their values.

Plain SQL on the hot reads (a stream's open, its replay, the ingest's derivation):
building the ORM's query, or a raw() queryset's column mapping and converters, cost
more than the database's answer (docs/PERFORMANCE.md). For the column types in
PLAIN_TYPES the cursor returns what the ORM gives, on both backends, but for two things:
- times: SQLite's (Django's converters parse them) are naive, in UTC; the ORM makes
  them aware (USE_TZ, the connections' time zone UTC). PostgreSQL's are aware already.
- JSON: both return its text (Django's psycopg setup loads jsonb as text, for
  JSONField's own decoding); callers decode it with json.loads, as JSONField does.
Other types (a decimal, a UUID on SQLite) would need the ORM's converters:
`require_plain` refuses a model that has them, at import.
"""

from datetime import UTC, datetime

from django.core.exceptions import ImproperlyConfigured
from django.utils.dateparse import parse_datetime

PLAIN_TYPES = frozenset({
    "AutoField", "BigAutoField", "BigIntegerField", "IntegerField", "PositiveIntegerField",
    "SmallIntegerField", "BooleanField", "CharField", "TextField", "DateTimeField",
    "ForeignKey",
})  # fmt: skip


def aware(value):
    """A value as the ORM gives it: a naive time (SQLite's) made aware, in UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def aware_time(value):
    """A time column's value as the ORM gives it, also where SQLite does not convert it:
    its converters go by a column's declared type, which an expression's column (of a
    UNION, say) does not have, and then the stored text comes back as it is."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return aware(value)


def aware_row(row) -> tuple:
    return tuple(aware(value) for value in row)


def require_plain(model) -> list[str]:
    """The model's column names (its attnames, in its field order), once checked that
    a plain cursor gives each as the ORM does (aware_row applied)."""
    other = [
        f.name for f in model._meta.concrete_fields if f.get_internal_type() not in PLAIN_TYPES
    ]
    if other:
        raise ImproperlyConfigured(
            f"{model.__name__} is read with a plain cursor (cgm/db_rows.py), which does not "
            f"convert {', '.join(other)}: read it through the ORM, or convert them there"
        )
    return [f.attname for f in model._meta.concrete_fields]
