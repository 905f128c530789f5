"""The ingest's group on PostgreSQL: few round trips, whatever the group's size.

On a busy 2-core machine every round trip is a wait for the database process and
then for this process's GIL, and costs about as much as a whole statement's work; so
the group is one psycopg pipeline (psycopg's documented pipeline mode) in one
transaction:

1. sent together: BEGIN, `_INGEST_STATEMENT` (the notifications, each an entry of its
   station's log, the stations locked), and the reads the derivation needs (faults/persist.py); they
   run in that order on the server, so the reads see every change committed before
   this group got its locks;
2. the derivation in Python (faults/derive.py);
3. only when faults open: their INSERT, for their ids;
4. sent together with COMMIT: the fault updates, status upserts and the derived log
   entries with the stations' counters (notifications/log.py).

Inside a caller's transaction (tests, any caller's atomic block) the same statements
run without the pipeline, in a savepoint.
"""

import weakref
from contextlib import contextmanager

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from cgm.pg_statements import run
from faults import persist
from faults.derive import derive, wanted_for
from faults.rules import current_rules
from notifications.ingest.rows import CommittedFrames, new_row
from notifications.ingest.validation import EventInput
from notifications.log import number_changes
from notifications.models import Notification
from stations.models import Station


def store_postgresql(
    candidates: dict[str, EventInput],
) -> tuple[list[Notification], CommittedFrames]:
    """Store the group's new events and what they change; returns the new rows and the
    frames to publish once committed. Raises Django's database errors. The events are
    prepared (ingest/rows.py prepare_rows)."""
    _set_up_connection()
    pg = connection.connection
    events = list(candidates.values())
    # Everything that does not need the stored state is done before the transaction:
    # from the ingest statement on, the group's stations are locked, and every other
    # writer with an event for one of them waits until this one commits.
    received_at = timezone.now()
    for event in events:
        event.row.received_at = received_at
    params = [_group_json(events), received_at]
    wanted = wanted_for(events)
    rules = current_rules()
    with connection.wrap_database_errors, _one_transaction(pg):
        ingest = run(pg, _INGEST_STATEMENT, params)
        state = persist.PostgresState(pg, wanted)
        inserted = {message_id: (seq, pk) for message_id, seq, pk in ingest.fetchall()}
        fresh = [event for event in events if event.message_id in inserted]
        derived = derive(fresh, state.collect(), rules)
        # The stations are locked: their counters stand at their last new notification
        # (numbered in arrival order, so the last one seen is each station's highest).
        last_seq = {event.row.station_id: inserted[event.message_id][0] for event in fresh}
        updates_written = persist.insert_new_faults_postgresql(pg, derived)  # their ids
        rows, derived_frames = number_changes(derived.changes, last_seq)
        persist.queue_writes_postgresql(pg, derived, rows, last_seq, updates_written)
    new_rows = _numbered_rows(fresh, inserted, received_at)
    return new_rows, CommittedFrames(new_rows, derived_frames)


@contextmanager
def _one_transaction(pg: psycopg.Connection):
    if connection.in_atomic_block:
        with transaction.atomic():  # a savepoint: a raced id fails this group alone
            yield
        return
    # Django's connection is in autocommit here (no atomic block): psycopg's own
    # transaction sends BEGIN, and COMMIT on exit, both on the pipeline.
    with pg.pipeline(), pg.transaction():
        yield


def _numbered_rows(events, inserted, received_at) -> list[Notification]:
    """The stored events' rows with their numbers and ids (once committed: off the
    stations' locks)."""
    alias = connection.alias
    rows = []
    for event in events:
        seq, pk = inserted[event.message_id]
        row = new_row(event, seq, received_at, pk)
        row._state.adding = False  # stored, as bulk_create leaves its rows
        row._state.db = alias
        rows.append(row)
    return rows


_NOTIFICATION = Notification._meta.db_table
_STATION = Station._meta.db_table

# PostgreSQL: the group's notifications in one prepared statement: one round trip
# where separate statements took four (the known-id check, the sequences, COPY and its
# end), each a wait for the database process and then for this process's GIL on a busy
# machine; and planned once per connection. PostgreSQL's CPU per single-event ingest
# went from 800-890 to 360-470 µs in `make bench` (docs/PERFORMANCE.md). It runs inside
# the group's transaction, which then derives faults and statuses (faults/derive.py)
# with the stations still locked. Read from the top:
#   incoming   the group's events (one JSON array, see _group_json), in arrival
#              order (ord);
#   fresh      those whose id is not in the log yet (a sender's retry is answered
#              from the log instead);
#   wanted     the stations they belong to;
#   locked     the stations' rows, locked in key order (so two writers never
#              deadlock) and held until commit: that is what keeps each station's
#              sequence contiguous and committed in order, which resume relies on.
#              READ COMMITTED re-reads a row that another writer committed while this
#              one waited for its lock, so `previous` is the counter as it stands;
#   inserted   the rows, numbered from each station's previous counter in arrival
#              order (a notification is its own entry of the station's log).
# The counters are moved on once, by the group's write statement at the end (after the
# derived changes are numbered too: faults/persist.py queue_writes_postgresql).
# An id that another process stores between this statement's snapshot and its insert
# fails the unique index: the transaction rolls back whole, numbers included, and
# notification_ingest_group runs it again, which then finds the row.
_INGEST_STATEMENT = f"""
WITH incoming AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset(%b::jsonb) AS (
        station_id bigint, box_id bigint, connector_id bigint, message_id text,
        fault_type text, action text, message text, code text, occurred_at timestamptz,
        extra jsonb, payload jsonb
    )) WITH ORDINALITY AS e(
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
    SELECT DISTINCT station_id FROM fresh
),
locked AS (
    SELECT s.id, s.log_seq AS previous FROM {_STATION} AS s
    WHERE s.id IN (SELECT station_id FROM wanted)
    ORDER BY s.id FOR UPDATE
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
    FROM fresh AS f JOIN locked AS a ON a.id = f.station_id
    RETURNING message_id, seq, id
)
SELECT message_id, seq, id FROM inserted
"""  # noqa: S608 (table names from the models; every value is a parameter)


# Connections set up for the prepared ingest statement (see _set_up_connection).
_set_up: weakref.WeakSet = weakref.WeakSet()


def _set_up_connection() -> None:
    """Ready this connection for the prepared ingest statement, once. Before the
    group's transaction: a SET inside one would be undone by its rollback.

    The statement runs on a server-side binding cursor (Django's own cursors bind on
    the client), prepared once per connection, its arrays sent in binary. Django turns
    psycopg's prepared statements off (prepare_threshold None, for connection
    poolers); its own client-side cursors never prepare anyway, so turning them back
    on for this connection touches nothing but the statements run with prepare=True.
    And with plan_cache_mode left at "auto", PostgreSQL re-plans a prepared statement
    for each new set of values whenever it guesses that pays, which for this one it
    always does: planning then cost more of the database's CPU than running it
    (measured: 800 against 420 µs a group).

    Behind a pooler in transaction mode that does not carry prepared statements over
    (PgBouncer before 1.21, or without max_prepared_statements), set CGM_PG_PREPARE=0:
    the statement is then sent unprepared, and nothing is set on the session."""
    connection.ensure_connection()
    pg_connection = connection.connection
    if settings.CGM_PG_PREPARE and pg_connection not in _set_up and not connection.in_atomic_block:
        pg_connection.prepare_threshold = 1_000_000  # only prepare=True prepares
        with connection.wrap_database_errors:
            pg_connection.execute("SET plan_cache_mode = force_generic_plan")
        _set_up.add(pg_connection)


def _group_json(events: list[EventInput]) -> Jsonb:
    """_INGEST_STATEMENT's events: one JSON array, encoded by the json module's C
    encoder in one call. Sent as arrays, one per column, psycopg dumped them element by
    element in Python: the largest cost of the writer's own (measured in
    docs/PERFORMANCE.md, issue 11)."""
    return Jsonb([
        {
            "station_id": e.station.pk,
            "box_id": e.box.pk if e.box is not None else None,
            "connector_id": e.connector.pk if e.connector is not None else None,
            "message_id": e.message_id,
            "fault_type": e.fault_type,
            "action": e.action,
            "message": e.message,
            "code": e.code,
            "occurred_at": e.occurred_at.isoformat() if e.occurred_at is not None else None,
            "extra": e.extra,
            "payload": e.payload,
        }
        for e in events
    ])  # fmt: skip
