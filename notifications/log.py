"""The station log: numbering and writing entries, and reading them back.

A station's log is its notifications and its fault and status changes (LogEntry),
numbered from one counter; models.LogEntry says why two tables.

The log is the source of truth for resume: a stream that reconnects with a cursor is
served from here, not from a replay buffer. Every entry takes the station's next number
(Station.log_seq) inside the transaction of the change it records, with the station's
row locked (the ingest's statement locks it; operator actions lock it first).
"""

import json
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone

from cgm.db_rows import aware_time
from cgm.pg_statements import Read, fetch_rows
from notifications.ingest.write_lock import write_lock
from notifications.models import LogEntry, Notification
from notifications.push.local import LiveEvent
from notifications.wire import (
    NOTIFICATION_EVENT,
    encode_data,
    render_notification,
    station_channel,
)
from stations.models import Box, Connector, Station

_STATION = Station._meta.db_table
_LOG = LogEntry._meta.db_table
_NOTIFICATION = Notification._meta.db_table
_BOX = Box._meta.db_table
_CONNECTOR = Connector._meta.db_table


@dataclass(frozen=True)
class LogPosition:
    station_id: int
    last_seq: int
    pruned_through: int


@dataclass(frozen=True)
class LogItem:
    """A log entry as a stream sends it: its station, number, event name and data line."""

    station_code: str
    seq: int
    kind: str
    data: str


def log_positions(station_codes: list[str]) -> dict[str, LogPosition]:
    """The stations' log positions, by code (unknown codes left out). Plain SQL,
    prepared on PostgreSQL: read on every stream open."""
    if not station_codes:
        return {}
    rows = fetch_rows(_positions_read(len(station_codes)), station_codes)
    return {code: LogPosition(pk, seq, pruned) for code, pk, seq, pruned in rows}


# A stream's positions read is prepared on PostgreSQL for up to this many stations
# (cgm/pg_statements.py): one statement per count of stations, on every connection that
# reads it. Wider streams are rare, and a kept plan of hundreds of codes would cost more
# than it saves; theirs is planned each time. (The replay page: _page_read.)
PREPARED_MAX_STATIONS = 16


def _positions_read(stations: int) -> Read | str:
    if stations > PREPARED_MAX_STATIONS:
        return _positions_sql(stations)
    return _POSITIONS_READS[stations]


def _positions_sql(stations: int) -> str:
    return (
        f"SELECT code, id, log_seq, log_pruned_through FROM {_STATION} "  # noqa: S608
        f"WHERE code IN ({', '.join(['%s'] * stations)})"
    )  # the model's table; the codes are parameters


# Made here, once: made at first use, two stream threads could make one twice.
_POSITIONS_READS = {
    stations: Read(f"cgm_positions_{stations}", _positions_sql(stations), ("text",) * stations)
    for stations in range(1, PREPARED_MAX_STATIONS + 1)
}


def allocate_seqs(counts: dict[int, int]) -> dict[int, int]:
    """Reserve counts[station] numbers per station; returns each station's first new
    number. One statement for all stations. Callers hold the stations' locks (or, on
    SQLite, the writer lock), so the numbers commit in order."""
    if not counts:
        return {}
    pairs = sorted(counts.items())
    values = ", ".join(["(%s, %s)"] * len(pairs))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_STATION} SET log_seq = log_seq + v.column2 "  # noqa: S608
            f"FROM (VALUES {values}) AS v WHERE id = v.column1 RETURNING id, log_seq",
            [number for pair in pairs for number in pair],
        )
        return {station_id: last - counts[station_id] + 1 for station_id, last in cursor}


def number_changes(changes, last_seq: dict[int, int]) -> tuple[list[tuple], list[LiveEvent]]:
    """Give changes (anything with .station, .kind and .data: faults/derive.py's
    Change) the numbers after each station's `last_seq` (moved on in place): their log
    rows (station, seq, kind, data JSON) and their frames to publish on commit."""
    rows, frames = [], []
    for change in changes:
        station = change.station
        seq = last_seq[station.pk] + 1
        last_seq[station.pk] = seq
        data = encode_data(change.data)
        rows.append((station.pk, seq, change.kind, data))
        frames.append(LiveEvent(station_channel(station.code), change.kind, data, seq))
    return rows, frames


def append_changes(changes) -> list[LiveEvent]:
    """Number and write changes made outside the ingest (an operator's action): their
    stations' counters move on here, under the row lock the caller holds."""
    if not changes:
        return []
    first = allocate_seqs(Counter(change.station.pk for change in changes))
    rows, frames = number_changes(changes, {pk: seq - 1 for pk, seq in first.items()})
    _write_entries(rows, timezone.now())
    return frames


def write_changes(rows: list[tuple], last_seq: dict[int, int]) -> None:
    """The ingest's derived entries (number_changes), and each station's counter set to
    its last number. (PostgreSQL's ingest writes them in its one write statement:
    faults/persist.py add_writes_postgresql.)"""
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {_STATION} SET log_seq = %s WHERE id = %s",  # noqa: S608
            [(seq, pk) for pk, seq in last_seq.items()],
        )
    _write_entries(rows, timezone.now())


def _write_entries(rows: list[tuple[int, int, str, str]], created_at) -> None:
    """(station, seq, kind, data JSON) rows into the log, with executemany: one C loop
    on SQLite. (PostgreSQL's ingest writes its entries in its own write statement,
    faults/persist.py; what comes here there is an operator's action, a row or two.)"""
    created = connection.ops.adapt_datetimefield_value(created_at)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {_LOG} (station_id, seq, kind, data, created_at) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s)",
            [(*row, created) for row in rows],
        )


def log_entries_after(
    after: dict[int, tuple[str, int]], limit: int, through: dict[int, int] | None = None
) -> list[LogItem]:
    """Entries past each station's position, in each station's order: `limit` of them
    when that many remain (the whole page is one write to a client, bounded like every
    write). Callers read page after page until a page comes back short. `after` maps
    station pk to (code, seq); the code is what the items carry. `through` (station pk
    to seq) stops each station there: the Pushpin relay reads exactly what was announced
    to it, all committed, so its pages have no holes.

    The log is two tables numbered from one counter (models.LogEntry), read here by one
    statement, so in one snapshot: a station's numbers are taken under its row's lock
    and committed in order, so what a snapshot holds of a station is a run without holes
    from its first entry on (that entry is past the position only when history was
    pruned, and then the run starts there). Two statements, one per table, let a
    transaction commit between them: that took a hole check and a second read in one
    snapshot, and the second statement cost a stream open its own round trip, planning
    and cursor (a reconnect storm is thousands of opens a second).

    Plain SQL, read on every resuming stream: building the ORM's queries and three
    related rows per notification cost more than the database's whole answer, and so
    did planning the statement for every read: one station's page (a one-station
    stream's, the Pushpin relay's for one station) is prepared on PostgreSQL
    (_page_read says why not several stations'; docs/PERFORMANCE.md, issue 13). Each
    table's part is cut at `limit` before the two are merged, so a client far behind
    costs the database two short index reads, not a sort of all it missed.
    """
    if not after:
        return []
    params = _after_params(after, through)
    rows = fetch_rows(_page_read(len(after), through is not None),
                      [*params, limit, *params, limit, limit])  # fmt: skip
    items = []
    for (
        station_id, seq, kind, data, message_id, fault_type, action, message, event_code,
        occurred_at, received_at, extra, box_code, connector_code,
    ) in rows:  # fmt: skip
        code = after[station_id][0]
        if kind == NOTIFICATION_EVENT:
            replayed = _Replayed(
                seq, message_id, fault_type, action, message, event_code,
                aware_time(occurred_at), aware_time(received_at), json.loads(extra),
            )  # fmt: skip
            data = encode_data(render_notification(replayed, code, box_code, connector_code))
        items.append(LogItem(code, seq, kind, data))
    return items


# The page: each table's entries past the positions, in (station, seq) order and cut at
# the limit (index reads on (station, seq)), merged and cut again. A change's row
# carries its frame's data line; a notification's, the fields its frame shows (with its
# equipment's codes), rendered here. The forms both PostgreSQL and SQLite take:
# subqueries in FROM (not parenthesised members), and the change rows' empty columns
# as bare NULLs in the union's first member, which take the notification columns'
# types (inside a subquery PostgreSQL would make them text). SQLite gives the union's
# times as their stored text (aware_time parses them).
_READ_PAGE = (
    "SELECT station_id, seq, kind, data, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "  # noqa: S608 (table names from the models; the conditions are placeholders)
    "NULL, NULL FROM ("
    f"SELECT entry.station_id, entry.seq, entry.kind, entry.data FROM {_LOG} AS entry "
    "WHERE {condition} ORDER BY entry.station_id, entry.seq LIMIT %s"
    ") AS changes UNION ALL SELECT * FROM ("
    f"SELECT entry.station_id, entry.seq, '{NOTIFICATION_EVENT}', NULL, entry.message_id, "
    "entry.fault_type, entry.action, entry.message, entry.code, entry.occurred_at, "
    "entry.received_at, entry.extra, b.code, c.code "
    f"FROM {_NOTIFICATION} AS entry LEFT JOIN {_BOX} AS b ON b.id = entry.box_id "
    f"LEFT JOIN {_CONNECTOR} AS c ON c.id = entry.connector_id "
    "WHERE {condition} ORDER BY entry.station_id, entry.seq LIMIT %s"
    ") AS notifications ORDER BY 1, 2 LIMIT %s"
)


@contextmanager
def consistent_read():
    """Reads that see one state of the log: REPEATABLE READ on PostgreSQL; on SQLite
    under the writer lock, so no write lands between them."""
    if connection.vendor == "postgresql":
        outer = connection.in_atomic_block  # a caller's transaction (tests) decides
        with transaction.atomic():
            if not outer:
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield
    else:
        with write_lock(), transaction.atomic():
            yield


def _page_read(stations: int, through: bool) -> Read | str:
    """One station's page is prepared; several stations' is planned for each read. The
    one plan kept for a prepared statement cannot know which stations its OR names, so
    for two or more it walks the (station, seq) index from the first station's start and
    filters (measured: 18 ms against 0.15 ms planned with the values, for a client 5
    entries behind on two stations of 40,000 entries each); planned with the values,
    each station is its own short index read."""
    if stations > 1:
        return _page_sql(stations, through)
    return _PAGE_READS[through]


def _page_sql(stations: int, through: bool) -> str:
    """_READ_PAGE for this many stations: each station's entries past its position
    (and, with `through`, up to its number there), one condition for both tables (each
    aliased `entry` in its part). Its parameters: _after_params."""
    if through:
        condition = "(entry.station_id = %s AND entry.seq > %s AND entry.seq <= %s)"
    else:
        condition = "(entry.station_id = %s AND entry.seq > %s)"
    return _READ_PAGE.format(condition=" OR ".join([condition] * stations))


def _after_params(after: dict[int, tuple[str, int]], through) -> list[int]:
    if through is None:
        return [value for pk, (_, seq) in after.items() for value in (pk, seq)]
    return [v for pk, (_, seq) in after.items() for v in (pk, seq, through[pk])]


def _one_station_page(through: bool) -> Read:
    sql = _page_sql(1, through)
    return Read(f"cgm_page_{'through_' if through else ''}1", sql, ("bigint",) * sql.count("%s"))


# One station's page, with and without `through`: made here, once (as _POSITIONS_READS).
_PAGE_READS = {through: _one_station_page(through) for through in (False, True)}


class _Replayed(NamedTuple):
    """What a notification's frame shows (wire.render_notification reads these)."""

    seq: int
    message_id: str
    fault_type: str
    action: str
    message: str
    code: str
    occurred_at: object
    received_at: object
    extra: dict
