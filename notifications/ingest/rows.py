"""A new notification row built from a validated event, and its frames."""

from django.core.exceptions import ImproperlyConfigured

from faults.derive import classify
from faults.rules import current_rules
from notifications.ingest.validation import EventInput
from notifications.models import Notification
from notifications.push.local import LiveEvent
from notifications.wire import (
    NOTIFICATION_EVENT,
    encode_data,
    notification_data,
    station_channel,
)

# Notification's columns in model order: new rows are built positionally, which skips
# the related-object descriptors of keyword construction (7.5 instead of 17.7 µs a
# row on the 2-core bench machine: a tenth of a batch's CPU). Checked at import, so a
# model change cannot silently shift a value into the wrong column.
_POSITIONAL_COLUMNS = (
    "id", "station_id", "box_id", "connector_id", "seq", "message_id", "fault_type",
    "action", "message", "code", "occurred_at", "received_at", "extra", "payload",
)  # fmt: skip
if tuple(f.attname for f in Notification._meta.concrete_fields) != _POSITIONAL_COLUMNS:
    raise ImproperlyConfigured("Notification's columns changed: update _POSITIONAL_COLUMNS")


def prepare_rows(events: list[EventInput]) -> None:
    """Build each event's row and work out what it does by the rules (faults/derive.py
    classify), ahead: on the request's thread, as the group committer calls it. The
    group's writer is the ingest's one serial step, and what it derives with the
    stations locked makes every other writer wait. Events prepared already are left."""
    rules = None
    for event in events:
        if event.row is None:
            rules = rules or current_rules()
            event.row = _build(event)
            event.classified = classify(event.row, rules)


def new_row(event: EventInput, seq: int, received_at, pk: int | None = None) -> Notification:
    """The event's prepared row, numbered and stamped."""
    row = event.row
    row.pk, row.seq, row.received_at = pk, seq, received_at
    return row


def _build(event: EventInput) -> Notification:
    box, connector = event.box, event.connector
    row = Notification(
        None,
        event.station.pk,
        box.pk if box is not None else None,
        connector.pk if connector is not None else None,
        None,
        event.message_id,
        event.fault_type,
        event.action,
        event.message,
        event.code,
        event.occurred_at,
        None,
        event.extra,
        event.payload,
    )
    # The equipment rows the event was validated against: rendering the row (its
    # codes) must never query.
    row.station = event.station
    if box is not None:
        row.box = box
    if connector is not None:
        row.connector = connector
    return row


def notification_frame(row: Notification) -> LiveEvent:
    data = notification_data(row)
    return LiveEvent(
        station_channel(data["stationId"]), NOTIFICATION_EVENT, encode_data(data), row.seq
    )


class CommittedFrames:
    """What one committed group publishes, in log order: each notification's frame,
    then the derived changes' (rendered by the derivation, which logged them too).

    The notifications' frames are rendered when first iterated: on the group
    committer's publisher thread, off the writer's path (the writer is the one serial
    step of the ingest; every microsecond there is taken from every request)."""

    __slots__ = ("rows", "derived")

    def __init__(self, rows: list[Notification], derived: list[LiveEvent]):
        self.rows = rows
        self.derived = derived

    def __iter__(self):
        for row in self.rows:
            yield notification_frame(row)
        yield from self.derived

    def __bool__(self) -> bool:
        return bool(self.rows or self.derived)
