"""The station log: numbering and writing entries, and reading them back.

A station's log is its notifications and its fault and status changes (LogEntry),
numbered from one counter; models.LogEntry says why two tables.

The log is the source of truth for resume: a stream that reconnects with a cursor is
served from here, not from a replay buffer. Every entry takes the station's next number
(Station.log_seq) inside the transaction of the change it records, with the station's
row locked (the ingest's statement locks it; operator actions lock it first).
"""

from collections import Counter
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from notifications.models import LogEntry, Notification
from notifications.push.local import LiveEvent
from notifications.wire import (
    NOTIFICATION_EVENT,
    encode_data,
    notification_data,
    station_channel,
)
from stations.models import Station

_STATION = Station._meta.db_table
_LOG = LogEntry._meta.db_table


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
    rows = Station.objects.filter(code__in=station_codes).values_list(
        "code", "pk", "log_seq", "log_pruned_through"
    )
    return {code: LogPosition(pk, seq, pruned) for code, pk, seq, pruned in rows}


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
    faults/persist.py queue_writes_postgresql.)"""
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


def log_entries_after(after: dict[int, tuple[str, int]], limit: int) -> list[LogItem]:
    """Entries past each station's position, in each station's order: `limit` of them
    when that many remain (the whole page is one write to a client, bounded like every
    write). Callers read page after page until a page comes back short.

    `after` maps station pk to (code, seq). The log is two tables numbered from one
    counter (models.LogEntry): each is read in (station, seq) order up to `limit`, and
    the merge is cut where the first cut list ends, so no station's position ever
    passes an entry not read yet.

    The two reads are two statements, and a group may commit between them. The changes
    are read first: a transaction numbers its notifications before its changes, so a
    change read implies its notifications are visible to the second read. The reverse,
    notifications of a group whose changes the first read missed, leaves a hole in the
    merge: each station's entries are cut at its first hole, and the next read (or the
    live frames, which are published after commit) goes on from there.
    """
    if not after:
        return []
    condition = Q()
    for station_id, (_, seq) in after.items():
        condition |= Q(station_id=station_id, seq__gt=seq)
    changes = list(
        LogEntry.objects.filter(condition)
        .select_related("station")
        .order_by("station_id", "seq")[:limit]
    )
    notifications = list(
        Notification.objects.filter(condition)
        .select_related("station", "box", "connector")
        .order_by("station_id", "seq")[:limit]
    )
    complete_to = min(
        ((rows[-1].station_id, rows[-1].seq) for rows in (notifications, changes)
         if len(rows) >= limit),
        default=None,
    )  # fmt: skip
    merged = sorted(notifications + changes, key=lambda row: (row.station_id, row.seq))
    items = []
    last: dict[int, int] = {}
    holed: set[int] = set()
    for row in merged:
        if len(items) == limit or (
            complete_to is not None and (row.station_id, row.seq) > complete_to
        ):
            break  # a page is at most `limit` entries (each a write to the client)
        if row.station_id in holed:
            continue
        if row.station_id in last and row.seq != last[row.station_id] + 1:
            holed.add(row.station_id)  # not visible to both reads yet
            continue
        last[row.station_id] = row.seq
        if isinstance(row, Notification):
            data = encode_data(notification_data(row))
            items.append(LogItem(row.station.code, row.seq, NOTIFICATION_EVENT, data))
        else:
            items.append(LogItem(row.station.code, row.seq, row.kind, row.data))
    return items
