"""A new notification row built from a validated event, and its frame."""

from django.core.exceptions import ImproperlyConfigured

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


def new_row(event: EventInput, seq: int, received_at, pk: int | None = None) -> Notification:
    box, connector = event.box, event.connector
    row = Notification(
        pk,
        event.station.pk,
        box.pk if box is not None else None,
        connector.pk if connector is not None else None,
        seq,
        event.message_id,
        event.fault_type,
        event.action,
        event.message,
        event.code,
        event.occurred_at,
        received_at,
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
    return LiveEvent(
        station_channel(row.station.code),
        NOTIFICATION_EVENT,
        encode_data(notification_data(row)),
        row.seq,
    )
