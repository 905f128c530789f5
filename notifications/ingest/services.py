"""The ingest workflow: the only place that writes notifications.

One transaction per group of requests: the new notifications and their log entries,
then what they change (faults/derive.py: faults, statuses, and their log entries),
published after commit: each event's notification frame first, then the status and
fault frames (docs/EVENT_FLOW.md).
"""

import logging
from collections import Counter
from dataclasses import dataclass

from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from faults import persist
from faults.derive import derive, wanted_for
from faults.rules import current_rules
from notifications.ingest.postgresql import store_postgresql
from notifications.ingest.rows import CommittedFrames, new_row, prepare_rows
from notifications.ingest.validation import EventInput
from notifications.ingest.write_lock import write_lock
from notifications.log import allocate_seqs, number_changes, write_changes
from notifications.models import Notification
from notifications.push.publish import publish_frames
from notifications.push.pushpin_relay import announce

logger = logging.getLogger(__name__)


@dataclass
class Stored:
    notification: Notification
    created: bool


def notification_ingest(*, events: list[EventInput], publish=publish_frames) -> list[Stored]:
    """Store validated events in one transaction and publish the new ones after commit.

    Events whose id is already in the log are not stored again (a sender's retry); the
    caller gets the stored row back with created=False. Returns results in input order.
    """
    return notification_ingest_group([events], publish)[0]


def notification_ingest_group(
    requests: list[list[EventInput]], publish=publish_frames
) -> list[list[Stored]]:
    """Several requests' events in one transaction (notifications/group_commit.py): all
    stored or none. An id repeated across requests is stored once, for the first.
    `publish(frames)` runs after the commit (the group committer hands it to a thread of
    its own)."""
    try:
        return _store(requests, publish)
    except (IntegrityError, OperationalError) as exc:
        if isinstance(exc, OperationalError) and not _is_deadlock(exc):
            raise
        # Two processes raced with the same id between our existence check and insert
        # (PostgreSQL, different stations), or two groups holding the same new ids in
        # opposite orders deadlocked on the unique index and PostgreSQL aborted one.
        # The loser's transaction rolled back whole, sequence numbers included; on
        # retry the winner's rows are simply found.
        logger.info("ingest raced on a duplicate id (%s); retrying once", type(exc).__name__)
        return _store(requests, publish)


def _is_deadlock(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"


def _store(requests: list[list[EventInput]], publish) -> list[list[Stored]]:
    # The first occurrence of each id in the group, in arrival order: an id repeated
    # across the group's requests is stored once, for the first.
    candidates: dict[str, EventInput] = {}
    for request in requests:
        for event in request:
            candidates.setdefault(event.message_id, event)
    prepare_rows(list(candidates.values()))  # (the group committer's are prepared already)

    # One transaction for the notifications, their log entries and everything derived
    # from them (faults, statuses and their log entries): a crash keeps all or none.
    if connection.vendor == "postgresql":
        new_rows, frames = store_postgresql(candidates)
    else:
        with write_lock(), transaction.atomic():
            new_rows, frames = _store_rows(candidates)
    if frames:
        # After the block: committed (or, inside a caller's transaction, at its commit).
        _publish_when_committed(publish, frames)

    stored = {row.message_id: row for row in new_rows}
    created = {id(candidates[row.message_id]) for row in new_rows}
    known = candidates.keys() - stored.keys()
    if known:
        # A sender's retry: answer with the row as first stored (rare, so loaded here).
        stored.update(
            (n.message_id, n)
            for n in Notification.objects.select_related("station", "box", "connector")
            .filter(message_id__in=known)
            .order_by()
        )
    return [
        [Stored(stored[event.message_id], id(event) in created) for event in request]
        for request in requests
    ]


def _publish_when_committed(publish, frames: CommittedFrames) -> None:
    # Django calls it once the transaction commits, in commit order (the group
    # committer's publisher thread keeps that order). robust: a failing publish must
    # not turn a committed ingest into an error; streams notice the gap at the
    # station's next event and catch up from the log.
    transaction.on_commit(lambda: publish(frames), robust=True)


def _store_rows(candidates: dict[str, EventInput]) -> tuple[list[Notification], CommittedFrames]:
    """SQLite (and any other backend): check, number, insert and derive, inside the
    caller's transaction and under the process's writer lock (write_lock.py)."""
    known = _known_ids(candidates.keys())
    new_events = [e for message_id, e in candidates.items() if message_id not in known]
    next_seq = allocate_seqs(Counter(event.station.pk for event in new_events))
    received_at = timezone.now()
    new_rows = []
    for event in new_events:
        new_rows.append(new_row(event, next_seq[event.station.pk], received_at))
        next_seq[event.station.pk] += 1
    if not new_rows:
        return [], []
    Notification.objects.bulk_create(new_rows)
    derived = derive(new_events, persist.read_state(wanted_for(new_events)), current_rules())
    persist.write_derived(derived)
    last_seq = {pk: seq - 1 for pk, seq in next_seq.items()}
    rows, derived_frames = number_changes(derived.changes, last_seq)
    write_changes(rows, last_seq)
    announce(((row.station, row.seq) for row in new_rows), last_seq)
    return new_rows, CommittedFrames(new_rows, derived_frames)


def _known_ids(message_ids) -> set[str]:
    # Raw SQL: the ORM spent longer building this query than the database answering it.
    table = Notification._meta.db_table
    placeholders = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT message_id FROM {table} WHERE message_id IN ({placeholders})",  # noqa: S608
            list(message_ids),
        )
        return {row[0] for row in cursor.fetchall()}
