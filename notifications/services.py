"""The ingest workflow: the only place that writes notifications."""

import logging
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from psycopg.types.json import Jsonb

from cgm.write_lock import write_lock
from notifications.models import Notification
from notifications.publish import publish_notifications
from notifications.serializers import EventInput
from stations.models import Station

logger = logging.getLogger(__name__)


@dataclass
class Stored:
    notification: Notification
    created: bool


def notification_ingest(*, events: list[EventInput], publish=publish_notifications) -> list[Stored]:
    """Store validated events in one transaction and publish the new ones after commit.

    Events whose id is already in the log are not stored again (a sender's retry); the
    caller gets the stored row back with created=False. Returns results in input order.
    """
    return notification_ingest_group([events], publish)[0]


def notification_ingest_group(
    requests: list[list[EventInput]], publish=publish_notifications
) -> list[list[Stored]]:
    """Several requests' events in one transaction (notifications/group_commit.py): all
    stored or none. An id repeated across requests is stored once, for the first.
    `publish(rows)` runs after the commit (the group committer hands it to a thread of
    its own)."""
    try:
        return _store(requests, publish)
    except IntegrityError:
        # Two processes raced with the same id between our existence check and insert
        # (PostgreSQL, different stations). The loser's transaction rolled back whole,
        # sequence numbers included; on retry the winner's row is simply found.
        logger.info("ingest raced on a duplicate id; retrying once")
        return _store(requests, publish)


def _store(requests: list[list[EventInput]], publish) -> list[list[Stored]]:
    events = [event for request in requests for event in request]
    with write_lock(), transaction.atomic():
        known = _known_ids({e.message_id for e in events})
        # The first occurrence of each id not in the log yet, in arrival order.
        new_events, seen = [], set(known)
        for event in events:
            if event.message_id not in seen:
                seen.add(event.message_id)
                new_events.append(event)

        counts: dict[int, int] = {}
        for event in new_events:
            counts[event.station.pk] = counts.get(event.station.pk, 0) + 1
        next_seq = {
            station_id: last - count + 1 for station_id, count, last in _allocate_sequences(counts)
        }

        new_rows: list[Notification] = []
        for event in new_events:
            seq = next_seq[event.station.pk]
            next_seq[event.station.pk] += 1
            new_rows.append(
                Notification(
                    station=event.station,
                    box=event.box,
                    connector=event.connector,
                    seq=seq,
                    message_id=event.message_id,
                    fault_type=event.fault_type,
                    action=event.action,
                    message=event.message,
                    code=event.code,
                    occurred_at=event.occurred_at,
                    extra=event.extra,
                    payload=event.payload,
                )
            )
        if new_rows:
            _insert(new_rows)
            # robust: a failing publish must not turn a committed ingest into a 500;
            # streams notice the gap at the next event and catch up from the log.
            transaction.on_commit(lambda: publish(new_rows), robust=True)

    stored = {row.message_id: row for row in new_rows}
    if known:
        # A sender's retry: answer with the row as first stored (rare, so loaded here).
        stored.update(
            (n.message_id, n)
            for n in Notification.objects.select_related("station", "box", "connector")
            .filter(message_id__in=known)
            .order_by()
        )
    created = {id(event) for event in new_events}
    return [
        [Stored(stored[event.message_id], id(event) in created) for event in request]
        for request in requests
    ]


def _known_ids(message_ids: set[str]) -> set[str]:
    # Raw SQL: the ORM spent longer building this query than the database answering it.
    table = Notification._meta.db_table
    placeholders = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT message_id FROM {table} WHERE message_id IN ({placeholders})",  # noqa: S608
            list(message_ids),
        )
        return {row[0] for row in cursor.fetchall()}


_COPY_COLUMNS = (
    "station_id",
    "box_id",
    "connector_id",
    "seq",
    "message_id",
    "fault_type",
    "action",
    "message",
    "code",
    "occurred_at",
    "received_at",
    "extra",
    "payload",
)


def _insert(rows: list[Notification]) -> None:
    if connection.vendor != "postgresql":
        Notification.objects.bulk_create(rows)
        return
    # PostgreSQL: COPY, one statement whose rows psycopg formats in C. bulk_create's
    # UNNEST form escapes every text value of every row in Python: a third of the CPU
    # of a batch ingest. The ids are not read back: nothing after the insert uses them.
    table = Notification._meta.db_table
    columns = ", ".join(_COPY_COLUMNS)
    with connection.wrap_database_errors, connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    (
                        row.station_id,
                        row.box_id,
                        row.connector_id,
                        row.seq,
                        row.message_id,
                        row.fault_type,
                        row.action,
                        row.message,
                        row.code,
                        row.occurred_at,
                        row.received_at,
                        Jsonb(row.extra),
                        Jsonb(row.payload),
                    )
                )


def _allocate_sequences(counts: dict[int, int]) -> list[tuple[int, int, int]]:
    """Reserve `count` sequence numbers per station; returns (station, count, last).

    It takes each station row's lock (held until commit) and allocates in the same
    statement. Holding that lock until commit is what makes a station's sequences
    contiguous and commit in order, which resume relies on. Locks are always taken in
    primary-key order, so two writers never deadlock. A rollback (a duplicate id raced
    in, say) releases the numbers unused.
    """
    if connection.vendor == "postgresql":
        return _allocate_sequences_postgresql(counts)
    # SQLite has one writer at a time and no round trips: one UPDATE per station.
    allocated = []
    with connection.cursor() as cursor:
        for station_id in sorted(counts):
            cursor.execute(
                f"UPDATE {_STATION} SET log_seq = log_seq + %s WHERE id = %s "  # noqa: S608
                "RETURNING log_seq",
                [counts[station_id], station_id],
            )
            allocated.append((station_id, counts[station_id], cursor.fetchone()[0]))
    return allocated


_STATION = Station._meta.db_table


def _allocate_sequences_postgresql(counts: dict[int, int]) -> list[tuple[int, int, int]]:
    # One round trip for all the stations of a group (a batch of 100 events touches up
    # to 100): the CTE locks the rows in key order, then the UPDATE allocates.
    ids = sorted(counts)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH locked AS (SELECT id FROM {_STATION} WHERE id = ANY(%s) "  # noqa: S608
            "ORDER BY id FOR UPDATE), "
            "wanted AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS w(id, n)) "
            f"UPDATE {_STATION} AS s SET log_seq = s.log_seq + wanted.n "
            "FROM locked, wanted WHERE s.id = locked.id AND s.id = wanted.id "
            "RETURNING s.id, s.log_seq",
            [ids, ids, [counts[i] for i in ids]],
        )
        last = dict(cursor.fetchall())
    return [(station_id, counts[station_id], last[station_id]) for station_id in ids]
