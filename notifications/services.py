"""The ingest workflow: the only place that writes notifications."""

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F

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


def notification_ingest(*, events: list[EventInput]) -> list[Stored]:
    """Store validated events in one transaction and publish the new ones after commit.

    Events whose id is already in the log are not stored again (a sender's retry); the
    caller gets the stored row back with created=False. Returns results in input order.
    """
    try:
        return _store(events)
    except IntegrityError:
        # Two requests raced with the same id between our existence check and insert
        # (PostgreSQL, different stations). The loser's transaction rolled back whole,
        # sequence numbers included; on retry the winner's row is simply found.
        logger.info("ingest raced on a duplicate id; retrying once")
        return _store(events)


def _store(events: list[EventInput]) -> list[Stored]:
    with write_lock(), transaction.atomic():
        # Lock the stations first, always in primary-key order (no deadlocks between
        # batches): it serialises sequence allocation per station, so sequences are
        # contiguous and commit in order, which the streams' resume relies on.
        station_ids = sorted({event.station.pk for event in events})
        positions = dict(
            Station.objects.select_for_update()
            .filter(pk__in=station_ids)
            .order_by("pk")
            .values_list("pk", "log_seq")
        )

        existing = {
            n.message_id: n
            for n in Notification.objects.select_related("station", "box", "connector")
            .filter(message_id__in=[event.message_id for event in events])
            .order_by()
        }

        new_rows: list[Notification] = []
        for event in events:
            if event.message_id in existing:
                continue
            positions[event.station.pk] += 1
            new_rows.append(
                Notification(
                    station=event.station,
                    box=event.box,
                    connector=event.connector,
                    seq=positions[event.station.pk],
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
            Notification.objects.bulk_create(new_rows)
            allocated: dict[int, int] = {}
            for row in new_rows:
                allocated[row.station_id] = allocated.get(row.station_id, 0) + 1
            for station_id, count in allocated.items():
                Station.objects.filter(pk=station_id).update(log_seq=F("log_seq") + count)
            # robust: a failing publish must not turn a committed ingest into a 500;
            # streams notice the gap at the next event and catch up from the log.
            transaction.on_commit(lambda: publish_notifications(new_rows), robust=True)

    created = {row.message_id: row for row in new_rows}
    return [
        Stored(created[e.message_id], True)
        if e.message_id in created
        else Stored(existing[e.message_id], False)
        for e in events
    ]
