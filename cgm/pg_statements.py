"""Running the ingest's PostgreSQL statements: several in one round trip.

A group's transaction is two or three queries (notifications/ingest/postgresql.py),
each several statements in one string of PostgreSQL's simple query protocol, their
values bound on the client (psycopg's documented `ClientCursor`, which allows several
statements in one `execute`). So the writer waits on the database two or three times a
group, whatever the group holds.

Why not psycopg's pipeline mode, which this used before: there every statement queued,
sent and fetched is a trip through psycopg's wait loop, about twelve per group, and
each trip gives the GIL away. On a busy 2-core machine a thread gets it back only after
the switch interval (5 ms) when others are running Python, and the group's stations
stay locked meanwhile (measured in docs/PERFORMANCE.md, issue 11).

Each statement is prepared once per connection (SQL's PREPARE, when CGM_PG_PREPARE is
on, see `prepare_all`) and then sent as `EXECUTE name(values)`: planned once, not per
group. Behind a pooler in transaction mode (PgBouncer, whatever its version: its
prepared-statement support covers the protocol's, not SQL's PREPARE), CGM_PG_PREPARE=0
sends their text instead.
"""

import re
import weakref
from dataclasses import dataclass

import psycopg
from django.conf import settings
from psycopg.pq import ExecStatus

# Every Statement made, to be prepared together on a new connection (prepare_all).
_STATEMENTS: dict[str, "Statement"] = {}
# Connections whose statements are prepared.
_prepared: weakref.WeakSet = weakref.WeakSet()


@dataclass(frozen=True)
class Statement:
    """A statement with `%s` placeholders, each cast to its type (`%s::jsonb`) so that
    PREPARE can tell the types without the values."""

    name: str
    sql: str

    def __post_init__(self):
        if re.search(r"%(?!s::)", self.sql):
            raise ValueError(f"{self.name}: every placeholder needs a cast, and no literal %")
        if _STATEMENTS.setdefault(self.name, self) is not self:
            raise ValueError(f"two statements named {self.name}")

    def prepare(self) -> str:
        numbered = iter(range(1, self.sql.count("%s") + 1))
        return f"PREPARE {self.name} AS " + re.sub(r"%s", lambda _: f"${next(numbered)}", self.sql)

    def call(self, prepared: bool) -> str:
        if not prepared:
            return self.sql
        return f"EXECUTE {self.name}({', '.join(['%s'] * self.sql.count('%s'))})"


def prepare_all(pg: psycopg.Connection) -> None:
    """Prepare every statement on `pg`, once per connection. Called in autocommit,
    outside any transaction. A PREPARE outlives a rollback, so a query that failed part
    way may have left some: DEALLOCATE ALL first makes the next attempt start clean
    (Django prepares nothing on its connections, and psycopg's own preparing is off).

    With plan_cache_mode left at "auto", PostgreSQL re-plans a prepared statement for
    each new set of values whenever it guesses that pays, which for the ingest
    statement it always does: planning then cost more of the database's CPU than
    running it (measured: 800 against 420 µs a group). The setting only concerns
    prepared statements, and Django prepares none."""
    if not settings.CGM_PG_PREPARE or pg in _prepared:
        return
    pg.execute(
        "; ".join(
            ["DEALLOCATE ALL", "SET plan_cache_mode = force_generic_plan"]
            + [statement.prepare() for statement in _STATEMENTS.values()]
        )
    )
    _prepared.add(pg)


class Script:
    """Statements sent as one query. `add` returns the index of the statement's rows in
    `run`'s result."""

    def __init__(self, pg: psycopg.Connection):
        self._pg = pg
        self._prepared = pg in _prepared
        self._texts: list[str] = []
        self._values: list = []

    def add(self, statement: Statement | str, values: list | None = None) -> int:
        if isinstance(statement, Statement):
            self._texts.append(statement.call(self._prepared))
            self._values.extend(values or [])
        else:
            self._texts.append(statement)  # BEGIN, COMMIT
        return len(self._texts) - 1

    def run(self) -> list[list[tuple]]:
        """Each statement's rows (an empty list for those that return none)."""
        if not self._texts:
            return []
        cursor = psycopg.ClientCursor(self._pg)
        try:
            cursor.execute("; ".join(self._texts), self._values)
        except psycopg.errors.InvalidSqlStatementName:
            # The session lost its prepared statements (a pooler between us and the
            # database, or a DISCARD): the next group prepares them again. This one
            # fails, and is answered as any failed group.
            _prepared.discard(self._pg)
            raise
        results = []
        while True:
            # (Not `cursor.description`: it builds a Column for each column, for every
            # statement of every group.)
            returned_rows = cursor.pgresult.status == ExecStatus.TUPLES_OK
            results.append(cursor.fetchall() if returned_rows else [])
            if not cursor.nextset():
                return results
