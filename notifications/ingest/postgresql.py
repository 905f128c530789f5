"""The ingest's group on PostgreSQL: few round trips, whatever the group's size.

On a busy 2-core machine every round trip is a wait for the database process and
then for this process's GIL, and costs about as much as a whole statement's work; so
the group's transaction is two queries (three when it opens faults), each several
statements sent together (cgm/pg_statements.py says how, and why not psycopg's
pipeline mode):

1. BEGIN, `_INGEST` (the notifications, each an entry of its station's log, the
   stations locked), and the reads the derivation needs (faults/persist.py); they run
   in that order on the server, so the reads see every change committed before this
   group got its locks;
2. the derivation in Python (faults/derive.py);
3. only when faults open: their INSERT, for their ids;
4. the fault updates, status upserts and the derived log entries with the stations'
   counters (notifications/log.py), and COMMIT.

Inside a caller's transaction (tests, any caller's atomic block) the same statements
run in a savepoint, without BEGIN and COMMIT.
"""

import logging
from contextlib import contextmanager

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from cgm.pg_statements import Script, Statement, prepare_all
from faults import persist
from faults.derive import derive, wanted_for
from faults.rules import current_rules
from notifications.ingest.rows import CommittedFrames, new_row
from notifications.ingest.validation import EventInput
from notifications.log import number_changes
from notifications.models import Notification
from notifications.push.pushpin_relay import ANNOUNCE, new_ranges, payloads
from stations.models import Station

logger = logging.getLogger(__name__)


def store_postgresql(
    candidates: dict[str, EventInput],
) -> tuple[list[Notification], CommittedFrames]:
    """Store the group's new events and what they change; returns the new rows and the
    frames to publish once committed. Raises Django's database errors. The events are
    prepared (ingest/rows.py prepare_rows)."""
    connection.ensure_connection()
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
    with connection.wrap_database_errors, _one_transaction(pg) as (begin, commit):
        if begin:
            prepare_all(pg)  # before the transaction: a PREPARE outlives a rollback
        reads = Script(pg)
        if begin:
            reads.add(begin)
        ingest = reads.add(_INGEST, params)
        state = persist.PostgresState(reads, wanted)
        results = reads.run()
        inserted = {message_id: (seq, pk) for message_id, seq, pk in results[ingest]}
        fresh = [event for event in events if event.message_id in inserted]
        derived = derive(fresh, state.collect(results), rules)
        # The stations are locked: their counters stand at their last new notification
        # (numbered in arrival order, so the last one seen is each station's highest).
        last_seq = {event.row.station_id: inserted[event.message_id][0] for event in fresh}
        updates_written = persist.insert_new_faults_postgresql(pg, derived)  # their ids
        rows, derived_frames = number_changes(derived.changes, last_seq)
        writes = Script(pg)
        persist.add_writes_postgresql(writes, derived, rows, last_seq, updates_written)
        if settings.GRIP_URLS:
            # The Pushpin relay's wake-up, delivered once this commits (pushpin_relay.py).
            numbered = ((event.station, inserted[event.message_id][0]) for event in fresh)
            for payload in payloads(new_ranges(numbered, last_seq)):
                writes.add(ANNOUNCE, [payload])
        if commit:
            writes.add(commit)
        writes.run()
    new_rows = _numbered_rows(fresh, inserted, received_at)
    return new_rows, CommittedFrames(new_rows, derived_frames)


@contextmanager
def _one_transaction(pg: psycopg.Connection):
    """Yields the statements that begin and commit the group's transaction, to be sent
    with its first and last statements: no round trip of their own."""
    if connection.in_atomic_block:
        with transaction.atomic():  # a savepoint: a raced id fails this group alone
            yield None, None
        return
    if not connection.get_autocommit():
        raise RuntimeError("the ingest begins its own transaction: autocommit must be on")
    # Django's connection is in autocommit here (no atomic block), so the transaction
    # is ours to begin and end. On any failure it is rolled back before the error goes
    # on (the connection stays usable; the group committer retries or answers 503).
    try:
        yield "BEGIN", "COMMIT"
    except BaseException:
        if pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                pg.execute("ROLLBACK")
            except psycopg.Error:
                # The connection is broken: the error that got us here goes on, and
                # the caller drops the connection.
                logger.warning("ROLLBACK after a failed ingest group failed", exc_info=True)
        raise


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
#   incoming   the group's events (one JSON object of columns, see _group_json),
#              in arrival order (ord);
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
# derived changes are numbered too: faults/persist.py add_writes_postgresql).
# An id that another process stores between this statement's snapshot and its insert
# fails the unique index: the transaction rolls back whole, numbers included, and
# notification_ingest_group runs it again, which then finds the row.
_INGEST = Statement(
    "cgm_ingest",
    f"""
WITH g AS (SELECT %s::jsonb AS j),
incoming AS (
    SELECT e.station_id::bigint AS station_id, e.box_id::bigint AS box_id,
        e.connector_id::bigint AS connector_id, e.message_id, e.fault_type, e.action,
        e.message, e.code, e.occurred_at::timestamptz AS occurred_at, e.extra, e.payload, e.ord
    FROM g, ROWS FROM (
        jsonb_array_elements_text(g.j -> 'station_id'), jsonb_array_elements_text(g.j -> 'box_id'),
        jsonb_array_elements_text(g.j -> 'connector_id'),
        jsonb_array_elements_text(g.j -> 'message_id'),
        jsonb_array_elements_text(g.j -> 'fault_type'), jsonb_array_elements_text(g.j -> 'action'),
        jsonb_array_elements_text(g.j -> 'message'), jsonb_array_elements_text(g.j -> 'code'),
        jsonb_array_elements_text(g.j -> 'occurred_at'),
        jsonb_array_elements(g.j -> 'extra'), jsonb_array_elements(g.j -> 'payload')
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
           %s::timestamptz, f.extra, f.payload
    FROM fresh AS f JOIN locked AS a ON a.id = f.station_id
    RETURNING message_id, seq, id
)
SELECT message_id, seq, id FROM inserted
""",  # noqa: S608 (table names from the models; every value is a parameter)
)


def _group_json(events: list[EventInput]) -> Jsonb:
    """_INGEST's events: one JSON object of columns (one array per column, in arrival
    order), encoded by the json module's C encoder in one call. (Until issue 11 they
    went as eleven array parameters, which psycopg dumped element by element in Python:
    the largest cost of the writer's own, docs/PERFORMANCE.md.) An array of row objects
    repeated the eleven column names in every row for PostgreSQL to parse and look up:
    by columns the statement costs it 8 % less CPU on the bench's group of 400 events
    (10.5 against 11.4 ms, docs/PERFORMANCE.md, sixteenth session), and the JSON is 42 %
    shorter. Every array holds one value per event (the statement pairs them by position);
    extra and payload are objects, never None (validation.py)."""
    return Jsonb(
        {
            "station_id": [e.station.pk for e in events],
            "box_id": [e.box.pk if e.box is not None else None for e in events],
            "connector_id": [e.connector.pk if e.connector is not None else None for e in events],
            "message_id": [e.message_id for e in events],
            "fault_type": [e.fault_type for e in events],
            "action": [e.action for e in events],
            "message": [e.message for e in events],
            "code": [e.code for e in events],
            "occurred_at": [
                e.occurred_at.isoformat() if e.occurred_at is not None else None for e in events
            ],
            "extra": [e.extra for e in events],
            "payload": [e.payload for e in events],
        }
    )
