"""Reading what the ingest's derivation needs, and writing what it derived.

Runs inside the ingest's transaction, with the group's stations locked
(notifications/ingest/). One job per backend:

- PostgreSQL (`PostgresState`, `add_writes_postgresql`): prepared statements added to
  the ingest's scripts (cgm/pg_statements.py). The reads go right behind the ingest
  statement and come back with it; the writes are one statement that goes with the
  COMMIT. A group costs two round trips (three when it opens a fault: the new faults'
  ids are needed for their frames), whatever its size (docs/PERFORMANCE.md).
- Others (SQLite, in-process): the ORM, and executemany for the writes.
"""

import psycopg
from django.db import connection
from psycopg.types.json import Jsonb

from cgm.db_rows import aware_row
from cgm.pg_statements import Script, Statement
from faults.derive import CurrentState, Derived, Wanted, key_of
from faults.models import Fault
from notifications.models import LogEntry
from stations.models import BoxStatus, ConnectorStatus, Station

_FAULT = Fault._meta.db_table
_BOX_STATUS = BoxStatus._meta.db_table
_CONNECTOR_STATUS = ConnectorStatus._meta.db_table
_STATION = Station._meta.db_table
_LOG = LogEntry._meta.db_table
_FAULT_COLUMNS = [f.attname for f in Fault._meta.concrete_fields]
_BOX_COLUMNS = ["box_id", "status", "since", "last_seen"]
_CONNECTOR_COLUMNS = ["connector_id", "status", "since"]
_NEW_FAULT_COLUMNS = [
    "station_id", "box_id", "connector_id", "fault_type", "code", "severity", "state",
    "occurrences", "first_seen", "last_seen", "resolved_by", "resolved_at",
]  # fmt: skip


def _fault_row(fault: Fault) -> tuple:
    return tuple(getattr(fault, column) for column in _NEW_FAULT_COLUMNS)


# --- SQLite and other backends: the ORM


def _state(fault_rows, box_rows, connector_rows) -> CurrentState:
    """The rows of the three reads (columns as _FAULT/_BOX/_CONNECTOR_COLUMNS), as the
    derivation takes them. Both backends read the same; only the statements differ."""
    db = connection.alias
    faults = [Fault.from_db(db, _FAULT_COLUMNS, row) for row in fault_rows]
    boxes = [BoxStatus.from_db(db, _BOX_COLUMNS, row) for row in box_rows]
    connectors = [ConnectorStatus.from_db(db, _CONNECTOR_COLUMNS, row) for row in connector_rows]
    return CurrentState(
        faults={key_of(fault): fault for fault in faults},
        boxes={s.box_id: s for s in boxes},
        connectors={s.connector_id: s for s in connectors},
    )


def _columns_of(columns: list[str]) -> str:
    return ", ".join(columns)


def read_state(wanted: Wanted) -> CurrentState:
    """Plain statements: building the ORM's queries cost more than running them, on
    the writer's path of every group."""
    with connection.cursor() as cursor:
        return _state(
            _select(
                cursor,
                f"SELECT {_columns_of(_FAULT_COLUMNS)} FROM {_FAULT} "  # noqa: S608
                "WHERE state <> 'resolved' AND station_id IN ({}) AND fault_type IN ({})",
                wanted.station_ids,
                wanted.fault_types,
            ),
            _select(
                cursor,
                f"SELECT {_columns_of(_BOX_COLUMNS)} FROM {_BOX_STATUS} "  # noqa: S608
                "WHERE box_id IN ({})",
                wanted.box_ids,
            ),
            _select(
                cursor,
                f"SELECT {_columns_of(_CONNECTOR_COLUMNS)} FROM {_CONNECTOR_STATUS} "  # noqa: S608
                "WHERE connector_id IN ({})",
                wanted.connector_ids,
            ),
        )


def _select(cursor, template: str, *value_sets) -> list[tuple]:
    """`template` with one "({})" per set of values, filled with placeholders; times
    made aware as the ORM would (SQLite keeps them as naive UTC)."""
    if not all(value_sets):
        return []
    cursor.execute(
        template.format(*(", ".join(["%s"] * len(values)) for values in value_sets)),
        [value for values in value_sets for value in values],
    )
    return [aware_row(row) for row in cursor.fetchall()]


_FAULT_UPDATE = (
    f"UPDATE {_FAULT} SET severity = %s, state = %s, occurrences = %s, "  # noqa: S608
    "first_seen = %s, last_seen = %s, resolved_by = %s, resolved_at = %s WHERE id = %s"
)
_BOX_UPSERT = (
    f"INSERT INTO {_BOX_STATUS} (box_id, status, since, last_seen) "  # noqa: S608
    "VALUES (%s, %s, %s, %s) ON CONFLICT (box_id) DO UPDATE SET "
    "status = excluded.status, since = excluded.since, last_seen = excluded.last_seen"
)
_BOX_HEARD = (
    f"INSERT INTO {_BOX_STATUS} (box_id, status, since, last_seen) "  # noqa: S608
    "VALUES (%s, '', NULL, %s) ON CONFLICT (box_id) DO UPDATE SET "
    f"last_seen = MAX(COALESCE({_BOX_STATUS}.last_seen, excluded.last_seen), excluded.last_seen)"
)
_CONNECTOR_UPSERT = (
    f"INSERT INTO {_CONNECTOR_STATUS} (connector_id, status, since) "  # noqa: S608
    "VALUES (%s, %s, %s) ON CONFLICT (connector_id) DO UPDATE SET "
    "status = excluded.status, since = excluded.since"
)


def write_derived(derived: Derived) -> None:
    """Plain statements with executemany (one C loop on SQLite): the ORM's bulk_update
    builds a CASE per field and row, and cost more than the rest of a batch's
    derivation together."""
    db_time = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        # Updates first: a fault resolved and fired again in one group frees its key
        # (the unique index on unresolved keys) before its successor is inserted.
        if derived.changed_faults:
            cursor.executemany(_FAULT_UPDATE, [
                (f.severity, f.state, f.occurrences, db_time(f.first_seen),
                 db_time(f.last_seen), f.resolved_by, db_time(f.resolved_at), f.pk)
                for f in derived.changed_faults.values()
            ])  # fmt: skip
        if derived.new_faults:
            Fault.objects.bulk_create(derived.new_faults)
        if derived.heard_boxes:
            cursor.executemany(_BOX_HEARD, [
                (box_id, db_time(at)) for box_id, at in derived.boxes_only_heard()
            ])  # fmt: skip
        if derived.changed_boxes:
            cursor.executemany(_BOX_UPSERT, [
                (s.box_id, s.status, db_time(s.since), db_time(s.last_seen))
                for s in derived.changed_boxes.values()
            ])  # fmt: skip
        if derived.changed_connectors:
            cursor.executemany(_CONNECTOR_UPSERT, [
                (s.connector_id, s.status, db_time(s.since))
                for s in derived.changed_connectors.values()
            ])  # fmt: skip
    derived.fill_new_fault_ids()


# --- PostgreSQL: statements of the ingest's scripts (cgm/pg_statements.py)

# The reads' values are JSON arrays: psycopg's client-side binding dumps a list element
# by element (a type lookup for each), a JSON array in one C-encoded string.
_READ_FAULTS = Statement(
    "cgm_read_faults",
    f"SELECT {_columns_of(_FAULT_COLUMNS)} FROM {_FAULT} "  # noqa: S608
    "WHERE station_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))::bigint[]) "
    "AND fault_type = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))) "
    "AND state <> 'resolved'",
)
_READ_BOXES = Statement(
    "cgm_read_boxes",
    f"SELECT {_columns_of(_BOX_COLUMNS)} FROM {_BOX_STATUS} "  # noqa: S608
    "WHERE box_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))::bigint[])",
)
_READ_CONNECTORS = Statement(
    "cgm_read_connectors",
    f"SELECT {_columns_of(_CONNECTOR_COLUMNS)} FROM {_CONNECTOR_STATUS} "  # noqa: S608
    "WHERE connector_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))::bigint[])",
)


class PostgresState:
    """The reads, added to `script` (behind the ingest statement that locks the
    stations: they run after it, so they see every change committed before this group
    got its locks). `collect(results)` takes their rows from the script's results."""

    def __init__(self, script: Script, wanted: Wanted):
        self._faults = script.add(
            _READ_FAULTS, [Jsonb(list(wanted.station_ids)), Jsonb(list(wanted.fault_types))]
        )
        self._boxes = self._connectors = None
        if wanted.box_ids:
            self._boxes = script.add(_READ_BOXES, [Jsonb(list(wanted.box_ids))])
        if wanted.connector_ids:
            self._connectors = script.add(_READ_CONNECTORS, [Jsonb(list(wanted.connector_ids))])

    def collect(self, results: list[list[tuple]]) -> CurrentState:
        return _state(
            results[self._faults],
            results[self._boxes] if self._boxes is not None else [],
            results[self._connectors] if self._connectors is not None else [],
        )


_NEW_FAULTS = Statement(
    "cgm_new_faults",
    f"INSERT INTO {_FAULT} ({', '.join(_NEW_FAULT_COLUMNS)}, acknowledged_by, note) "  # noqa: S608
    "SELECT *, '', '' FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], "
    "%s::text[], %s::text[], %s::text[], %s::int[], %s::timestamptz[], %s::timestamptz[], "
    "%s::text[], %s::timestamptz[]) RETURNING id",
)
# The derivation's writes, and the derived log entries with the stations' counters, as
# one statement, its rows in one JSON parameter: one statement and one parameter per
# group, whatever changed (each part is a no-op on an empty list). psycopg dumps an
# array parameter element by element in Python; the JSON is one C-encoded string
# (measured: the write's parameters went from the largest single CPU cost of a small
# group to a small one). Sent with the COMMIT. The updates also name their rows' ids as
# an array: joined to the JSON alone, the (generic) plan scanned the whole faults and
# stations tables, a cost that grows with the fault history, paid with the stations
# locked; with the ids it reads them by their primary keys.
_WRITE = Statement(
    "cgm_write_derived",
    f"""
WITH w AS (SELECT %s::jsonb AS j),
fault_updates AS (
    UPDATE {_FAULT} AS f SET severity = u.severity, state = u.state,
        occurrences = u.occurrences, first_seen = u.first_seen, last_seen = u.last_seen,
        resolved_by = u.resolved_by, resolved_at = u.resolved_at
    FROM jsonb_to_recordset((SELECT j -> 'faults' FROM w)) AS u(
        id bigint, severity text, state text, occurrences int, first_seen timestamptz,
        last_seen timestamptz, resolved_by text, resolved_at timestamptz)
    WHERE f.id = u.id AND f.id = ANY(ARRAY(
        SELECT (x ->> 'id')::bigint FROM jsonb_array_elements((SELECT j -> 'faults' FROM w)) AS x
    ))
),
box_statuses AS (
    INSERT INTO {_BOX_STATUS} (box_id, status, since, last_seen)
    SELECT * FROM jsonb_to_recordset((SELECT j -> 'boxes' FROM w)) AS b(
        box_id bigint, status text, since timestamptz, last_seen timestamptz)
    ON CONFLICT (box_id) DO UPDATE SET
        status = excluded.status, since = excluded.since, last_seen = excluded.last_seen
),
boxes_heard AS (
    INSERT INTO {_BOX_STATUS} (box_id, status, since, last_seen)
    SELECT box_id, '', NULL, last_seen
    FROM jsonb_to_recordset((SELECT j -> 'heard' FROM w)) AS h(box_id bigint, last_seen timestamptz)
    ON CONFLICT (box_id) DO UPDATE SET
        last_seen = GREATEST({_BOX_STATUS}.last_seen, excluded.last_seen)
),
connector_statuses AS (
    INSERT INTO {_CONNECTOR_STATUS} (connector_id, status, since)
    SELECT * FROM jsonb_to_recordset((SELECT j -> 'connectors' FROM w)) AS c(
        connector_id bigint, status text, since timestamptz)
    ON CONFLICT (connector_id) DO UPDATE SET status = excluded.status, since = excluded.since
),
counters AS (
    UPDATE {_STATION} AS s SET log_seq = m.last
    FROM jsonb_to_recordset((SELECT j -> 'counters' FROM w)) AS m(id bigint, last bigint)
    WHERE s.id = m.id AND s.id = ANY(ARRAY(
        SELECT (x ->> 'id')::bigint FROM jsonb_array_elements((SELECT j -> 'counters' FROM w)) AS x
    ))
)
INSERT INTO {_LOG} (station_id, seq, kind, data, created_at)
SELECT e.s, e.q, e.k, e.d, now()
FROM jsonb_to_recordset((SELECT j -> 'log' FROM w)) AS e(s bigint, q bigint, k text, d text)
""",  # noqa: S608
)


def _columns(rows: list[tuple], width: int) -> list[list]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def insert_new_faults_postgresql(pg: psycopg.Connection, derived: Derived) -> bool:
    """The group's new faults, for their ids (a round trip of its own, only when a group
    opens faults). True when it had to write the fault updates first: a fault resolved
    and fired again in one group frees its key (the unique index on unresolved keys)
    before its successor is inserted."""
    if not derived.new_faults:
        return False
    script = Script(pg)
    updates_written = bool(derived.changed_faults)
    if updates_written:
        # The write statement with the fault updates alone (its other parts are no-ops
        # on empty lists); add_writes_postgresql then leaves them out.
        script.add(_WRITE, _write_values(faults=derived.changed_faults.values()))
    ids = script.add(
        _NEW_FAULTS,
        _columns([_fault_row(f) for f in derived.new_faults], len(_NEW_FAULT_COLUMNS)),
    )
    # One row per input row, in input order (what Django's own bulk_create relies on).
    for fault, (pk,) in zip(derived.new_faults, script.run()[ids], strict=True):
        fault.pk = pk
        fault._state.adding = False
        fault._state.db = connection.alias
    derived.fill_new_fault_ids()
    return updates_written


def add_writes_postgresql(
    script: Script,
    derived: Derived,
    log_rows: list[tuple],
    last_seq: dict[int, int],
    updates_written: bool,
) -> None:
    """Everything else the group derived, and its log entries (notifications/log.py
    number_changes) with each station's counter set to its last number."""
    if not last_seq:
        return  # nothing new was stored (every change follows a new notification)
    script.add(
        _WRITE,
        _write_values(
            faults=() if updates_written else derived.changed_faults.values(),
            boxes=derived.changed_boxes.values(),
            heard=derived.boxes_only_heard(),
            connectors=derived.changed_connectors.values(),
            counters=last_seq.items(),
            log_rows=log_rows,
        ),
    )


def _write_values(*, faults=(), boxes=(), heard=(), connectors=(), counters=(), log_rows=()):
    """_WRITE's one parameter: its rows as one JSON document."""
    return [Jsonb({
        "faults": [
            {"id": f.pk, "severity": f.severity, "state": f.state,
             "occurrences": f.occurrences, "first_seen": _iso(f.first_seen),
             "last_seen": _iso(f.last_seen), "resolved_by": f.resolved_by,
             "resolved_at": _iso(f.resolved_at)}
            for f in faults
        ],
        "boxes": [
            {"box_id": s.box_id, "status": s.status, "since": _iso(s.since),
             "last_seen": _iso(s.last_seen)}
            for s in boxes
        ],
        "heard": [{"box_id": box_id, "last_seen": _iso(at)} for box_id, at in heard],
        "connectors": [
            {"connector_id": s.connector_id, "status": s.status, "since": _iso(s.since)}
            for s in connectors
        ],
        "counters": [{"id": pk, "last": seq} for pk, seq in counters],
        "log": [{"s": st, "q": seq, "k": kind, "d": data} for st, seq, kind, data in log_rows],
    })]  # fmt: skip


def _iso(value):
    return value.isoformat() if value is not None else None
