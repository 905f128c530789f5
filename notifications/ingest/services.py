"""The ingest workflow: the only place that writes notifications.

One transaction per group of requests: the new notifications and their log entries,
then what they change (faults/derive.py: faults, statuses, and their log entries),
published after commit: each event's notification frame first, then the status and
fault frames (docs/EVENT_FLOW.md).
"""

import logging
import weakref
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from faults.derive import derive_changes
from notifications.ingest.validation import EventInput
from notifications.ingest.write_lock import write_lock
from notifications.log import allocate_seqs, append_changes
from notifications.models import LogEntry, Notification
from notifications.push.local import LiveEvent
from notifications.push.publish import publish_frames
from notifications.wire import encode_data, notification_data, station_channel
from stations.models import Station

logger = logging.getLogger(__name__)


@dataclass
class Stored:
    notification: Notification
    created: bool


def notification_ingest(*, events: list[EventInput], publish=publish_frames) -> list[Stored]:
    """Store validated events in one transaction and publish the new ones after commit.

    Events whose id is already in the log are not stored again (a sender's retry); the
    caller gets the stored row back with created=False. Returns results in input order.
    """
    return notification_ingest_group([events], publish)[0]


def notification_ingest_group(
    requests: list[list[EventInput]], publish=publish_frames
) -> list[list[Stored]]:
    """Several requests' events in one transaction (notifications/group_commit.py): all
    stored or none. An id repeated across requests is stored once, for the first.
    `publish(frames)` runs after the commit (the group committer hands it to a thread of
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

    postgresql = connection.vendor == "postgresql"
    if postgresql:
        _set_up_connection()
    # One transaction for the notifications, their log entries and everything derived
    # from them (faults, statuses and their log entries): a crash keeps all or none.
    with nullcontext() if postgresql else write_lock(), transaction.atomic():
        new_rows = _write_postgresql(candidates) if postgresql else _write_rows(candidates)
        frames = [_notification_frame(row) for row in new_rows]
        frames += append_changes(derive_changes(new_rows))
        if frames:
            _publish_when_committed(publish, frames)

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


def _notification_frame(row: Notification) -> LiveEvent:
    return LiveEvent(
        station_channel(row.station.code),
        LogEntry.Kind.NOTIFICATION.value,
        encode_data(notification_data(row)),
        row.seq,
    )


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


def _publish_when_committed(publish, frames: list[LiveEvent]) -> None:
    # Django calls it once the transaction commits, in commit order (the group
    # committer's publisher thread keeps that order). robust: a failing publish must
    # not turn a committed ingest into an error; streams notice the gap at the
    # station's next event and catch up from the log.
    transaction.on_commit(lambda: publish(frames), robust=True)


def _write_rows(candidates: dict[str, EventInput]) -> list[Notification]:
    """SQLite (and any other backend): check, number and insert, inside the caller's
    transaction and under the process's writer lock (write_lock.py)."""
    known = _known_ids(candidates.keys())
    new_events = [e for message_id, e in candidates.items() if message_id not in known]
    next_seq = allocate_seqs(Counter(event.station.pk for event in new_events))
    received_at = timezone.now()
    new_rows = []
    for event in new_events:
        new_rows.append(_new_row(event, next_seq[event.station.pk], received_at))
        next_seq[event.station.pk] += 1
    if new_rows:
        Notification.objects.bulk_create(new_rows)
        LogEntry.objects.bulk_create(
            LogEntry(
                station_id=row.station_id,
                seq=row.seq,
                kind=LogEntry.Kind.NOTIFICATION,
                notification_id=row.pk,
                created_at=received_at,
            )
            for row in new_rows
        )
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
_LOG = LogEntry._meta.db_table

# PostgreSQL: the group's notifications in one prepared statement: one round trip
# where separate statements took four (the known-id check, the sequences, COPY and its
# end), each a wait for the database process and then for this process's GIL on a busy
# machine; and planned once per connection. PostgreSQL's CPU per single-event ingest
# went from 800-890 to 360-470 µs in `make bench` (docs/PERFORMANCE.md). It runs inside
# the group's transaction, which then derives faults and statuses (faults/derive.py)
# with the stations still locked. Read from the top:
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
#              order;
#   logged     their entries in the station log.
# An id that another process stores between this statement's snapshot and its insert
# fails the unique index: the transaction rolls back whole, numbers included, and
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
    RETURNING station_id, message_id, seq, id
),
logged AS (
    INSERT INTO {_LOG} (station_id, seq, kind, notification_id, created_at)
    SELECT station_id, seq, 'notification', id, %b::timestamptz FROM inserted
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
    with psycopg.Cursor(pg_connection) as cursor:
        cursor.execute(_INGEST_STATEMENT, params, prepare=settings.CGM_PG_PREPARE)
        return cursor.fetchall()


def _set_up_connection() -> None:
    """Ready this connection for the prepared statement (see _run_prepared). Before the
    group's transaction: a SET inside one would be undone by its rollback."""
    connection.ensure_connection()
    pg_connection = connection.connection
    if settings.CGM_PG_PREPARE and pg_connection not in _set_up and not connection.in_atomic_block:
        pg_connection.prepare_threshold = 1_000_000  # only prepare=True prepares
        with connection.wrap_database_errors:
            pg_connection.execute("SET plan_cache_mode = force_generic_plan")
        _set_up.add(pg_connection)


def _statement_params(events: list[EventInput], received_at) -> list:
    """_INGEST_STATEMENT's parameters: one array per column, then the receive time
    (the notifications'), then the log entries' creation time (the same)."""
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
        received_at,
    ]


def _write_postgresql(candidates: dict[str, EventInput]) -> list[Notification]:
    """The group's new notifications, inserted and logged by _INGEST_STATEMENT inside the
    caller's transaction; a sender's retry (an id already stored) is left out."""
    events = list(candidates.values())
    received_at = timezone.now()
    params = _statement_params(events, received_at)
    with connection.wrap_database_errors:
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
    return new_rows
