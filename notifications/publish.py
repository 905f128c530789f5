"""Publishing: the one place that hands committed notifications to the streams.

Called only once the rows are committed (services._publish_when_committed), so a
rolled-back ingest never reaches a client.

Local streams get their events through django-eventstream's listener manager, fed
directly rather than through its send_event: send_event would re-parse each event's
JSON to learn its id (our storage class) and escape it for a GRIP publish that is done
here anyway, about 60 µs per event, the largest single cost of a batch ingest.
"""

from django.conf import settings
from django_eventstream.event import Event
from django_eventstream.views import get_listener_manager

from notifications import fanout
from notifications.grip import publish_to_pushpin
from notifications.models import Notification
from notifications.representation import (
    EVENT_TYPE,
    encode_data,
    notification_data,
    station_channel,
)


def publish_notifications(notifications: list[Notification]) -> None:
    """Hand committed notifications to Pushpin (GRIP_URL), to this process's streams
    and to the other processes (REDIS_URL)."""
    outgoing = [
        (
            station_channel(notification.station.code),
            EVENT_TYPE,
            encode_data(notification_data(notification)),
            notification.seq,
        )
        for notification in notifications
    ]
    if settings.GRIP_URLS:
        # Streams held by Pushpin: one ordered publish for the whole ingest (grip.py).
        publish_to_pushpin(outgoing)
    queue_for_local_streams(outgoing)
    if fanout.enabled():
        fanout.broadcast(outgoing)


def queue_for_local_streams(outgoing: list[tuple[str, str, str, int]]) -> None:
    """(channel, type, data, seq) to the streams this process holds, in one wake-up of
    its event loop (notifications/listeners.py)."""
    get_listener_manager().add_many(
        [
            (channel, Event(channel, event_type, data, id=seq))
            for channel, event_type, data, seq in outgoing
        ]
    )
