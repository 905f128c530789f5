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

from cgm.db_rows import aware
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
    """The stations' log positions, by code (unknown codes left out). Plain SQL: read
    on every stream open."""
    if not station_codes:
        return {}
    placeholders = ", ".join(["%s"] * len(station_codes))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT code, id, log_seq, log_pruned_through FROM {_STATION} "  # noqa: S608
            f"WHERE code IN ({placeholders})",
            station_codes,
        )
        return {code: LogPosition(pk, seq, pruned) for code, pk, seq, pruned in cursor}


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

    The log is two tables numbered from one counter (models.LogEntry): each is read in
    (station, seq) order up to `limit`, and the merge is cut where the first cut list
    ends, so no station's position ever passes an entry not read yet.

    The two reads are two statements, and transactions may commit between them. The
    changes are read first: a transaction numbers its notifications before its
    changes, so a change read implies its notifications are visible to the second read.
    Notifications of a group whose changes the first read missed leave a hole in the
    merge: each station's entries are cut at its first hole, and the next read (or the
    live frames, which are published after commit) goes on from there. A hole at a
    station's start (a change committed after the first read, then a notification
    before the second) looks like pruned history: then both are read again in one
    snapshot, where the only gap left is history really pruned (taken as it is).

    Plain SQL, read on every resuming stream (a reconnect storm is thousands at once):
    building the ORM's queries and three related rows per notification cost more than
    the database's whole answer (docs/PERFORMANCE.md, issue 13).
    """
    if not after:
        return []
    items, starts_late = _merged_page(after, limit, through)
    if starts_late:
        with consistent_read():
            items, _ = _merged_page(after, limit, through)
    return items


def _merged_page(after, limit: int, through) -> tuple[list[LogItem], bool]:
    """One read of both tables, merged; and whether a station's entries start past
    its position (a hole before the first)."""
    changes = _changes_after(after, limit, through)
    notifications = _notifications_after(after, limit, through)
    complete_to = min(
        ((rows[-1][0], rows[-1][1]) for rows in (notifications, changes) if len(rows) >= limit),
        default=None,
    )
    merged = sorted(notifications + changes, key=lambda entry: (entry[0], entry[1]))
    items = []
    last: dict[int, int] = {}
    holed: set[int] = set()
    starts_late = False
    for station_id, seq, kind, data in merged:
        if len(items) == limit or (complete_to is not None and (station_id, seq) > complete_to):
            break  # a page is at most `limit` entries (each a write to the client)
        if station_id in holed:
            continue
        if station_id not in last:
            starts_late = starts_late or seq != after[station_id][1] + 1
        elif seq != last[station_id] + 1:
            holed.add(station_id)  # not visible to both reads yet
            continue
        last[station_id] = seq
        code = after[station_id][0]
        if isinstance(data, tuple):  # a notification: (row, box code, connector code)
            row, box_code, connector_code = data
            data = encode_data(render_notification(row, code, box_code, connector_code))
        items.append(LogItem(code, seq, kind, data))
    return items, starts_late


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


def _after_condition(after: dict[int, tuple[str, int]], table: str, through) -> tuple[str, list]:
    """WHERE text and parameters: each station's entries past its position (and, with
    `through`, up to its number there)."""
    if through is None:
        condition = f"({table}.station_id = %s AND {table}.seq > %s)"
        params = [value for pk, (_, seq) in after.items() for value in (pk, seq)]
    else:
        condition = f"({table}.station_id = %s AND {table}.seq > %s AND {table}.seq <= %s)"
        params = [v for pk, (_, seq) in after.items() for v in (pk, seq, through[pk])]
    return " OR ".join([condition] * len(after)), params


def _changes_after(after, limit: int, through=None) -> list[tuple[int, int, str, str]]:
    """(station, seq, kind, data) of the log's changes, in (station, seq) order."""
    condition, params = _after_condition(after, _LOG, through)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT station_id, seq, kind, data FROM {_LOG} WHERE {condition} "  # noqa: S608
            f"ORDER BY station_id, seq LIMIT %s",
            [*params, limit],
        )
        return cursor.fetchall()


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


def _notifications_after(after, limit: int, through=None) -> list[tuple[int, int, str, tuple]]:
    """(station, seq, "notification", (row, box code, connector code)) of the log's
    notifications, in (station, seq) order; each row the fields its frame shows.
    A plain cursor, not raw(): a raw queryset's column mapping and converters, set up
    anew for every query, cost more than the rows (docs/PERFORMANCE.md, issue 13)."""
    condition, params = _after_condition(after, "n", through)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT n.station_id, n.seq, n.message_id, n.fault_type, n.action, n.message, "  # noqa: S608
            f"n.code, n.occurred_at, n.received_at, n.extra, b.code, c.code "
            f"FROM {_NOTIFICATION} AS n LEFT JOIN {_BOX} AS b ON b.id = n.box_id "
            f"LEFT JOIN {_CONNECTOR} AS c ON c.id = n.connector_id "
            f"WHERE {condition} ORDER BY n.station_id, n.seq LIMIT %s",
            [*params, limit],
        )
        rows = cursor.fetchall()
    entries = []
    for row in rows:
        station_id, seq, message_id, fault_type, action, message, code = row[:7]
        occurred_at, received_at, extra, box_code, connector_code = row[7:]
        replayed = _Replayed(
            seq, message_id, fault_type, action, message, code,
            aware(occurred_at), aware(received_at), json.loads(extra),
        )  # fmt: skip
        entries.append((station_id, seq, NOTIFICATION_EVENT, (replayed, box_code, connector_code)))
    return entries
