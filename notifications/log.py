"""The station log (LogEntry): numbering and writing entries, and reading them back.

The log is the source of truth for resume: a stream that reconnects with a cursor is
served from here, not from a replay buffer. Every entry takes the station's next number
(Station.log_seq) inside the transaction of the change it records, with the station's
row locked (the ingest's statement locks it; operator actions lock it first).
"""

from collections import Counter
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q

from notifications.models import LogEntry
from notifications.push.local import LiveEvent
from notifications.wire import encode_data, notification_data, station_channel
from stations.models import Station

_STATION = Station._meta.db_table


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


def append_changes(changes) -> list[LiveEvent]:
    """Number and write log entries for changes (anything with .station, .kind and
    .data: faults/derive.py's Change); returns them as frames to publish on commit."""
    if not changes:
        return []
    next_seq = allocate_seqs(Counter(change.station.pk for change in changes))
    entries, frames = [], []
    for change in changes:
        station = change.station
        seq = next_seq[station.pk]
        next_seq[station.pk] = seq + 1
        entries.append(LogEntry(station_id=station.pk, seq=seq, kind=change.kind, data=change.data))
        frames.append(
            LiveEvent(station_channel(station.code), change.kind, encode_data(change.data), seq)
        )
    LogEntry.objects.bulk_create(entries)
    return frames


def log_entries_after(after: dict[int, tuple[str, int]], limit: int) -> list[LogItem]:
    """Entries past each station's position, in each station's order, at most `limit`.

    `after` maps station pk to (code, seq). Callers read page after page until a page
    comes back short; cutting a page anywhere leaves each station's position exact.
    """
    if not after:
        return []
    condition = Q()
    for station_id, (_, seq) in after.items():
        condition |= Q(station_id=station_id, seq__gt=seq)
    rows = (
        LogEntry.objects.filter(condition)
        .select_related("station", "notification__box", "notification__connector")
        .order_by("station_id", "seq")[:limit]
    )
    items = []
    for row in rows:
        if row.notification_id is not None:
            notification = row.notification
            notification.station = row.station
            data = encode_data(notification_data(notification))
        else:
            data = encode_data(row.data)
        items.append(LogItem(row.station.code, row.seq, row.kind, data))
    return items
