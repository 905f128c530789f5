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

The reads every stream open makes (the caller's key, the stations' positions, the
first page of the log) are prepared the same way, each on a connection the first time
it runs there outside a transaction (`Read`, `fetch_rows`; until then it runs as text):
parsed and planned for each open, they cost the database more than their answer (a
reconnect storm is thousands of opens a second; docs/PERFORMANCE.md, issue 13). They
are sent through Django's cursor like any query. Whichever prepares first on a session
also sets its plan cache mode (prepare_all says why), for every statement prepared on it.
"""

import re
import threading
import weakref
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection
from psycopg.pq import ExecStatus, TransactionStatus

# Every Statement made, to be prepared together on a new connection (prepare_all).
_STATEMENTS: dict[str, "Statement"] = {}
# Every Read's name (each is prepared on its own, at its first use on a connection).
_READS: set[str] = set()
# Per connection (psycopg's connection object, which Django's pool hands out again as
# it is): the names prepared on its session. Stream threads, request threads and the
# ingest's writer each use their own connection, hence the lock.
_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()


@dataclass(frozen=True)
class Statement:
    """A statement with `%s` placeholders, each cast to its type (`%s::jsonb`) so that
    PREPARE can tell the types without the values."""

    name: str
    sql: str

    def __post_init__(self):
        if re.search(r"%(?!s::)", self.sql):
            raise ValueError(f"{self.name}: every placeholder needs a cast, and no literal %")
        if self.name in _READS or _STATEMENTS.setdefault(self.name, self) is not self:
            raise ValueError(f"two statements named {self.name}")

    def prepare(self) -> str:
        return f"PREPARE {self.name} AS {_numbered(self.sql)}"

    def call(self, prepared: bool) -> str:
        return _execute(self.name, self.sql.count("%s")) if prepared else self.sql


def _numbered(sql: str) -> str:
    """`sql` with its `%s` as PREPARE's $1, $2..."""
    numbered = iter(range(1, sql.count("%s") + 1))
    return re.sub(r"%s", lambda _: f"${next(numbered)}", sql)


def _execute(name: str, values: int) -> str:
    return f"EXECUTE {name}({', '.join(['%s'] * values)})"


@dataclass(frozen=True)
class Read:
    """A read prepared on a connection at its first use there (`fetch_rows`), not with
    the ingest's statements. Its placeholders are bare `%s`, so that the same text runs
    on SQLite; `types` gives PREPARE their PostgreSQL types, in order."""

    name: str
    sql: str
    types: tuple[str, ...]

    def __post_init__(self):
        if re.search(r"%(?!s)", self.sql) or self.sql.count("%s") != len(self.types):
            raise ValueError(f"{self.name}: one type per placeholder, and no literal %")
        if self.name in _READS or self.name in _STATEMENTS:
            raise ValueError(f"two statements named {self.name}")
        _READS.add(self.name)

    def prepare(self) -> str:
        return f"PREPARE {self.name}({', '.join(self.types)}) AS {_numbered(self.sql)}"


def fetch_rows(read: Read | str, values: list) -> list[tuple]:
    """The rows of one read, through Django's cursor (its error translation and wrappers,
    as for any query). On PostgreSQL with CGM_PG_PREPARE, a Read runs as EXECUTE of its
    prepared statement, prepared here at its first use on this connection when no
    transaction is open (a PREPARE that failed inside one would break the caller's
    transaction; until then it runs as text). A str runs as it is."""
    sql = read if isinstance(read, str) else read.sql
    pg = None
    if not isinstance(read, str) and connection.vendor == "postgresql" and settings.CGM_PG_PREPARE:
        connection.ensure_connection()
        pg = connection.connection
        names = _names(pg)
        if read.name not in names and _outside_transactions(pg):
            with connection.wrap_database_errors:
                names = _prepare(pg, [read])
        if read.name in names:
            sql = _execute(read.name, len(read.types))
    with connection.cursor() as cursor:
        try:
            cursor.execute(sql, values)
        except DatabaseError as exc:
            if pg is not None and _stale(exc.__cause__):
                _forget(pg)
            raise
        return cursor.fetchall()


def _stale(error: BaseException | None) -> bool:
    """Whether a failed EXECUTE says the session's prepared statements are gone (a
    pooler, a DISCARD) or no longer fit the tables (a migration changed a column a
    statement returns): then the connection's are made afresh at their next use."""
    if isinstance(error, psycopg.errors.InvalidSqlStatementName):
        return True
    return isinstance(error, psycopg.errors.FeatureNotSupported) and (
        "cached plan must not change result type" in str(error)
    )


def _outside_transactions(pg: psycopg.Connection) -> bool:
    # In an atomic block the connection is out of autocommit and its transaction begins
    # with the next statement, whatever the session's status says now.
    return connection.get_autocommit() and pg.info.transaction_status == TransactionStatus.IDLE


def _names(pg: psycopg.Connection) -> set[str]:
    with _prepared_lock:
        return _prepared.get(pg, set())


def _forget(pg: psycopg.Connection) -> None:
    with _prepared_lock:
        _prepared.pop(pg, None)


def _prepare(pg: psycopg.Connection, statements: list[Statement | Read]) -> set[str]:
    """PREPARE those of `statements` not yet prepared on `pg`, in one query; returns the
    names prepared on it now. On a session
    new to this: DEALLOCATE ALL first, because a PREPARE outlives a rollback, so a query
    that failed part way may have left some, and the next attempt must start clean
    (Django prepares nothing on its connections, and psycopg's own preparing is off);
    and the plan cache mode (prepare_all says why)."""
    with _prepared_lock:
        known = _prepared.get(pg)
    missing = [s for s in statements if known is None or s.name not in known]
    if not missing:
        return known
    texts = [statement.prepare() for statement in missing]
    if known is None:
        texts = ["DEALLOCATE ALL", "SET plan_cache_mode = force_generic_plan", *texts]
    try:
        pg.execute("; ".join(texts))
    except psycopg.Error:
        # Some may have been made before the failure: the next attempt starts afresh.
        _forget(pg)
        raise
    names = (known or set()) | {statement.name for statement in missing}
    with _prepared_lock:
        _prepared[pg] = names
    return names


def prepare_all(pg: psycopg.Connection) -> None:
    """Prepare every statement on `pg`, once per connection. Called in autocommit,
    outside any transaction.

    With plan_cache_mode left at "auto", PostgreSQL re-plans a prepared statement for
    each new set of values whenever it guesses that pays, which for the ingest
    statement it always does: planning then cost more of the database's CPU than
    running it (measured: 800 against 420 µs a group). The setting only concerns
    prepared statements, and Django prepares none."""
    if not settings.CGM_PG_PREPARE:
        return
    _prepare(pg, list(_STATEMENTS.values()))


class Script:
    """Statements sent as one query. `add` returns the index of the statement's rows in
    `run`'s result."""

    def __init__(self, pg: psycopg.Connection):
        self._pg = pg
        # Those prepared on this session: all of them once prepare_all ran (it does before
        # the ingest's own transaction; inside a caller's, they may run as text).
        self._prepared = _names(pg)
        self._texts: list[str] = []
        self._values: list = []

    def add(self, statement: Statement | str, values: list | None = None) -> int:
        if isinstance(statement, Statement):
            self._texts.append(statement.call(statement.name in self._prepared))
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
        except psycopg.Error as exc:
            if _stale(exc):
                # The session lost its prepared statements (a pooler between us and the
                # database, or a DISCARD), or they no longer fit the tables: the next
                # group prepares them again. This one fails, and is answered as any
                # failed group.
                _forget(self._pg)
            raise
        results = []
        while True:
            # (Not `cursor.description`: it builds a Column for each column, for every
            # statement of every group.)
            returned_rows = cursor.pgresult.status == ExecStatus.TUPLES_OK
            results.append(cursor.fetchall() if returned_rows else [])
            if not cursor.nextset():
                return results
