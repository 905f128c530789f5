"""Reads of the notification log: each station's position, and entries after a cursor.

The log (the Notification table) is the source of truth for resume: a stream that
reconnects with a cursor is served from here, not from a replay buffer.
"""

from dataclasses import dataclass

from django.db.models import Q

from notifications.models import Notification
from notifications.wire import encode_data, notification_data
from stations.models import Station


@dataclass(frozen=True)
class LogPosition:
    station_id: int
    last_seq: int
    pruned_through: int


@dataclass(frozen=True)
class LogEntry:
    station_code: str
    seq: int
    data: str


def log_positions(station_codes: list[str]) -> dict[str, LogPosition]:
    rows = Station.objects.filter(code__in=station_codes).values_list(
        "code", "pk", "log_seq", "log_pruned_through"
    )
    return {code: LogPosition(pk, seq, pruned) for code, pk, seq, pruned in rows}


def log_entries_after(after: dict[int, tuple[str, int]], limit: int) -> list[LogEntry]:
    """Entries past each station's position, oldest first, at most `limit`.

    `after` maps station pk to (code, seq). Ordering by the row id keeps each
    station's entries in sequence order (both grow under the station's lock), so
    cutting at `limit` never skips an entry of any station.
    """
    if not after:
        return []
    condition = Q()
    for station_id, (_, seq) in after.items():
        condition |= Q(station_id=station_id, seq__gt=seq)
    rows = (
        Notification.objects.filter(condition)
        .select_related("station", "box", "connector")
        .order_by("id")[:limit]
    )
    return [
        LogEntry(row.station.code, row.seq, encode_data(notification_data(row))) for row in rows
    ]
