"""The ingest workflow: the only place that writes notifications."""

import logging
import weakref
from contextlib import nullcontext
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from notifications.ingest.validation import EventInput
from notifications.ingest.write_lock import write_lock
from notifications.models import Notification
from notifications.push.publish import publish_notifications
from stations.models import Station

logger = logging.getLogger(__name__)


@dataclass
class Stored:
    notification: Notification
    created: bool


def notification_ingest(*, events: list[EventInput], publish=publish_notifications) -> list[Stored]:
    """Store validated events in one transaction and publish the new ones after commit.

    Events whose id is already in the log are not stored again (a sender's retry); the
    caller gets the stored row back with created=False. Returns results in input order.
    """
    return notification_ingest_group([events], publish)[0]


def notification_ingest_group(
    requests: list[list[EventInput]], publish=publish_notifications
) -> list[list[Stored]]:
    """Several requests' events in one transaction (notifications/group_commit.py): all
    stored or none. An id repeated across requests is stored once, for the first.
    `publish(rows)` runs after the commit (the group committer hands it to a thread of
    its own)."""
    try:
        return _store(requests, publish)
    except (IntegrityError, OperationalError) as exc:
        if isinstance(exc, OperationalError) and not _is_deadlock(exc):
            raise
        # Two processes raced with the same id between our existence check and insert
        # (PostgreSQL, different stations), or two groups holding the same new ids in
        # opposite orders deadlocked on the unique index and PostgreSQL aborted one.
        # The loser's transaction rolled back whole, sequence numbers included; on
        # retry the winner's rows are simply found.
        logger.info("ingest raced on a duplicate id (%s); retrying once", type(exc).__name__)
        return _store(requests, publish)


def _is_deadlock(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"


def _store(requests: list[list[EventInput]], publish) -> list[list[Stored]]:
    # The first occurrence of each id in the group, in arrival order: an id repeated
    # across the group's requests is stored once, for the first.
    candidates: dict[str, EventInput] = {}
    for request in requests:
        for event in request:
            candidates.setdefault(event.message_id, event)

    if connection.vendor == "postgresql":
        new_rows = _write_postgresql(candidates, publish)
    else:
        new_rows = _write_in_transaction(candidates, publish)

    stored = {row.message_id: row for row in new_rows}
    created = {id(candidates[row.message_id]) for row in new_rows}
    known = candidates.keys() - stored.keys()
    if known:
        # A sender's retry: answer with the row as first stored (rare, so loaded here).
        stored.update(
            (n.message_id, n)
            for n in Notification.objects.select_related("station", "box", "connector")
            .filter(message_id__in=known)
            .order_by()
        )
    return [
        [Stored(stored[event.message_id], id(event) in created) for event in request]
        for request in requests
    ]


# Notification's columns in model order: new rows are built positionally, which skips
# the related-object descriptors of keyword construction (7.5 instead of 17.7 µs a
# row on the 2-core bench machine: a tenth of a batch's CPU). Checked at import, so a
# model change cannot silently shift a value into the wrong column.
_POSITIONAL_COLUMNS = (
    "id", "station_id", "box_id", "connector_id", "seq", "message_id", "fault_type",
    "action", "message", "code", "occurred_at", "received_at", "extra", "payload",
)  # fmt: skip
if tuple(f.attname for f in Notification._meta.concrete_fields) != _POSITIONAL_COLUMNS:
    raise ImproperlyConfigured("Notification's columns changed: update _POSITIONAL_COLUMNS")


def _new_row(event: EventInput, seq: int, received_at, pk: int | None = None) -> Notification:
    box, connector = event.box, event.connector
    row = Notification(
        pk,
        event.station.pk,
        box.pk if box is not None else None,
        connector.pk if connector is not None else None,
        seq,
        event.message_id,
        event.fault_type,
        event.action,
        event.message,
        event.code,
        event.occurred_at,
        received_at,
        event.extra,
        event.payload,
    )
    # The equipment rows the event was validated against: rendering the row (its
    # codes) must never query.
    row.station = event.station
    if box is not None:
        row.box = box
    if connector is not None:
        row.connector = connector
    return row


def _publish_when_committed(publish, rows: list[Notification]) -> None:
    # Inside a transaction Django waits for its commit; in autocommit (the PostgreSQL
    # statement has committed on its own) it calls at once. robust: a failing publish
    # must not turn a committed ingest into an error; streams notice the gap at the
    # station's next event and catch up from the log.
    transaction.on_commit(lambda: publish(rows), robust=True)


def _write_in_transaction(candidates: dict[str, EventInput], publish) -> list[Notification]:
    """SQLite (and any other backend): check, allocate and insert in one transaction,
    under the process's writer lock (cgm/write_lock.py)."""
    with write_lock(), transaction.atomic():
        known = _known_ids(candidates.keys())
        new_events = [e for message_id, e in candidates.items() if message_id not in known]
        counts: dict[int, int] = {}
        for event in new_events:
            counts[event.station.pk] = counts.get(event.station.pk, 0) + 1
        next_seq = {
            station_id: last - count + 1 for station_id, count, last in _allocate_sequences(counts)
        }
        received_at = timezone.now()
        new_rows = []
        for event in new_events:
            new_rows.append(_new_row(event, next_seq[event.station.pk], received_at))
            next_seq[event.station.pk] += 1
        if new_rows:
            Notification.objects.bulk_create(new_rows)
            _publish_when_committed(publish, new_rows)
    return new_rows


def _known_ids(message_ids) -> set[str]:
    # Raw SQL: the ORM spent longer building this query than the database answering it.
    table = Notification._meta.db_table
    placeholders = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT message_id FROM {table} WHERE message_id IN ({placeholders})",  # noqa: S608
            list(message_ids),
        )
        return {row[0] for row in cursor.fetchall()}


_NOTIFICATION = Notification._meta.db_table
_STATION = Station._meta.db_table

# PostgreSQL: the whole group in one prepared statement, committed on its own
# (autocommit): one round trip per group where a transaction of separate statements
# took six (BEGIN, the known-id check, the sequences, COPY and its end, COMMIT), each a
# wait for the database process and then for this process's GIL on a busy machine; and
# planned once per connection. PostgreSQL's CPU per single-event ingest went from
# 800-890 to 360-470 µs in `make bench` (docs/PERFORMANCE.md). Read from the top:
#   incoming   the group's events, one array per column, in arrival order (ord);
#   fresh      those whose id is not in the log yet (a sender's retry is answered
#              from the log instead);
#   wanted     how many numbers each station needs;
#   locked     the stations' rows, locked in key order (so two writers never
#              deadlock) and held until commit: that is what keeps each station's
#              sequence contiguous and committed in order, which resume relies on;
#   allocated  the stations' counters moved on; READ COMMITTED re-reads a row that
#              another writer committed while this one waited for its lock;
#   inserted   the rows, numbered from each station's previous counter in arrival
#              order.
# An id that another process stores between this statement's snapshot and its insert
# fails the unique index: the statement rolls back whole, numbers included, and
# notification_ingest_group runs it again, which then finds the row.
_INGEST_STATEMENT = f"""
WITH incoming AS (
    SELECT * FROM unnest(
        %b::bigint[], %b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[],
        %b::text[], %b::text[], %b::timestamptz[], %b::jsonb[], %b::jsonb[]
    ) WITH ORDINALITY AS e(
        station_id, box_id, connector_id, message_id, fault_type, action,
        message, code, occurred_at, extra, payload, ord
    )
),
fresh AS (
    SELECT i.* FROM incoming AS i
    LEFT JOIN LATERAL (
        SELECT 1 AS hit FROM {_NOTIFICATION} AS n WHERE n.message_id = i.message_id LIMIT 1
    ) AS known ON true
    WHERE known.hit IS NULL
),
wanted AS (
    SELECT station_id, count(*) AS n FROM fresh GROUP BY station_id
),
locked AS (
    SELECT s.id FROM {_STATION} AS s WHERE s.id IN (SELECT station_id FROM wanted)
    ORDER BY s.id FOR UPDATE
),
allocated AS (
    UPDATE {_STATION} AS s SET log_seq = s.log_seq + w.n
    FROM wanted AS w, locked AS l
    WHERE s.id = w.station_id AND s.id = l.id
    RETURNING s.id, s.log_seq - w.n AS previous
),
inserted AS (
    INSERT INTO {_NOTIFICATION} (
        station_id, box_id, connector_id, seq, message_id, fault_type, action,
        message, code, occurred_at, received_at, extra, payload
    )
    SELECT f.station_id, f.box_id, f.connector_id,
           a.previous + row_number() OVER (PARTITION BY f.station_id ORDER BY f.ord),
           f.message_id, f.fault_type, f.action, f.message, f.code, f.occurred_at,
           %b::timestamptz, f.extra, f.payload
    FROM fresh AS f JOIN allocated AS a ON a.id = f.station_id
    RETURNING message_id, seq, id
)
SELECT message_id, seq, id FROM inserted
"""  # noqa: S608 (table names from the models; every value is a parameter)


# Connections set up for the prepared ingest statement (see _run_prepared).
_set_up: weakref.WeakSet = weakref.WeakSet()


def _run_prepared(pg_connection: psycopg.Connection, params: list) -> list[tuple[str, int, int]]:
    """The ingest statement on a server-side binding cursor (Django's own cursors bind
    on the client), prepared once per connection, its arrays sent in binary.

    Django turns psycopg's prepared statements off (prepare_threshold None, for
    connection poolers); its own client-side cursors never prepare anyway, so turning
    them back on for this connection touches nothing but this statement. And with
    plan_cache_mode left at "auto", PostgreSQL re-plans a prepared statement for each
    new set of values whenever it guesses that pays, which for this one it always
    does: planning then cost more of the database's CPU than running it (measured:
    800 against 420 µs a group).

    Behind a pooler in transaction mode that does not carry prepared statements over
    (PgBouncer before 1.21, or without max_prepared_statements), set CGM_PG_PREPARE=0:
    the statement is then sent unprepared, and nothing is set on the session."""
    prepare = settings.CGM_PG_PREPARE
    if prepare and pg_connection not in _set_up and pg_connection.autocommit:
        # Only outside a transaction: a SET inside one is undone by its rollback.
        pg_connection.prepare_threshold = 1_000_000  # only prepare=True prepares
        pg_connection.execute("SET plan_cache_mode = force_generic_plan")
        _set_up.add(pg_connection)
    with psycopg.Cursor(pg_connection) as cursor:
        cursor.execute(_INGEST_STATEMENT, params, prepare=prepare)
        return cursor.fetchall()


def _statement_params(events: list[EventInput], received_at) -> list:
    """_INGEST_STATEMENT's parameters: one array per column, then the receive time."""
    return [
        [e.station.pk for e in events],
        [e.box.pk if e.box is not None else None for e in events],
        [e.connector.pk if e.connector is not None else None for e in events],
        [e.message_id for e in events],
        [e.fault_type for e in events],
        [e.action for e in events],
        [e.message for e in events],
        [e.code for e in events],
        [e.occurred_at for e in events],
        [Jsonb(e.extra) for e in events],
        [Jsonb(e.payload) for e in events],
        received_at,
    ]


def _write_postgresql(candidates: dict[str, EventInput], publish) -> list[Notification]:
    events = list(candidates.values())
    received_at = timezone.now()
    params = _statement_params(events, received_at)
    connection.ensure_connection()
    # Inside a caller's transaction (tests, or any caller's atomic block) the statement
    # gets a savepoint, so a raced duplicate id fails the statement alone and the retry
    # in notification_ingest_group can run; on its own it is its own transaction.
    nested = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with nested, connection.wrap_database_errors:
        inserted = {
            message_id: (seq, pk)
            for message_id, seq, pk in _run_prepared(connection.connection, params)
        }
    new_rows = []
    for event in events:
        if event.message_id in inserted:
            seq, pk = inserted[event.message_id]
            row = _new_row(event, seq, received_at, pk)
            row._state.adding = False  # stored, as bulk_create leaves its rows
            row._state.db = connection.alias
            new_rows.append(row)
    if new_rows:
        _publish_when_committed(publish, new_rows)
    return new_rows


def _allocate_sequences(counts: dict[int, int]) -> list[tuple[int, int, int]]:
    """Reserve `count` sequence numbers per station; returns (station, count, last).
    Outside PostgreSQL (SQLite has one writer at a time and no round trips): one UPDATE
    per station, in key order, inside the caller's transaction."""
    allocated = []
    with connection.cursor() as cursor:
        for station_id in sorted(counts):
            cursor.execute(
                f"UPDATE {_STATION} SET log_seq = log_seq + %s WHERE id = %s "  # noqa: S608
                "RETURNING log_seq",
                [counts[station_id], station_id],
            )
            allocated.append((station_id, counts[station_id], cursor.fetchone()[0]))
    return allocated
