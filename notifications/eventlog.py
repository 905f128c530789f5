"""Reads of the notification log for streams, and django-eventstream's storage over it.

The log (the Notification table) is the source of truth for resume: a stream that
reconnects with a cursor is served from here, not from a replay buffer.
"""

import json
from dataclasses import dataclass

from django.db.models import Q
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase

from notifications.models import Notification
from notifications.representation import EVENT_TYPE, encode_data, notification_data
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


class NotificationLogStorage(StorageBase):
    """django-eventstream storage whose event ids are the per-station sequences.

    The log row is written by the ingest transaction, and anything publishing runs after
    its commit, so append_event appends nothing: it hands back the id the row already
    has. (The ingest publishes through the listener manager directly, publish.py.)
    """

    def append_event(self, channel, event_type, data):
        return Event(channel, event_type, data, id=json.loads(data)["seq"])

    def get_events(self, channel, last_id, limit=100):
        positions = log_positions([channel])
        position = positions.get(channel)
        if position is None:
            return []
        if last_id < position.pruned_through or last_id > position.last_seq:
            raise EventDoesNotExist(f"No such event {last_id}", position.last_seq)
        entries = log_entries_after({position.station_id: (channel, last_id)}, limit)
        return [Event(channel, EVENT_TYPE, entry.data, id=entry.seq) for entry in entries]

    def get_current_id(self, channel):
        position = log_positions([channel]).get(channel)
        return position.last_seq if position else 0
