"""Running the ingest's PostgreSQL statements: server-side binding (arrays sent in
binary), each prepared once per connection when CGM_PG_PREPARE is on (the connection
is set up for it by notifications/ingest/postgresql.py, which says why)."""

import psycopg
from django.conf import settings


def run(pg: psycopg.Connection, statement: str, params: list) -> psycopg.Cursor:
    """Execute (in pipeline mode: queue) `statement`; the cursor holds its result."""
    cursor = psycopg.Cursor(pg)
    cursor.execute(statement, params, prepare=settings.CGM_PG_PREPARE)
    return cursor
