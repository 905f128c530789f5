"""Rows read with a plain cursor, as the ORM would give their values.

Plain SQL on the hot reads (a stream's open, its replay, the ingest's derivation):
building the ORM's query, or a raw() queryset's column mapping and converters, cost
more than the database's answer (docs/PERFORMANCE.md). What the cursor returns is
already what the ORM gives, on both backends, but for two things, done here:
- times: SQLite's (Django's converters parse them) are naive, in UTC; the ORM makes
  them aware (USE_TZ). PostgreSQL's are aware already.
- JSON: both return its text (Django's psycopg setup loads jsonb as text, for
  JSONField's own decoding); callers decode it with json.loads, as JSONField does.
"""

from datetime import UTC, datetime


def aware(value):
    """A value as the ORM gives it: a naive time (SQLite's) made aware, in UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def aware_row(row) -> tuple:
    return tuple(aware(value) for value in row)
