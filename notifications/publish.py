"""Publishing: the one place that hands stored notifications to django-eventstream.

Called only from transaction.on_commit (see services.notification_ingest), so a
rolled-back ingest never reaches a client.
"""

import logging

from django.conf import settings
from django_eventstream import send_event
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

logger = logging.getLogger(__name__)


def publish_notifications(notifications: list[Notification]) -> None:
    """Hand committed notifications to this process's streams, to Pushpin (GRIP_URL)
    and to the other processes (REDIS_URL)."""
    outgoing = []
    for notification in notifications:
        channel = station_channel(notification.station.code)
        data = encode_data(notification_data(notification))
        outgoing.append((channel, EVENT_TYPE, data, notification.seq))
        if not settings.GRIP_URL:
            send_event(channel, EVENT_TYPE, data, json_encode=False)
    if settings.GRIP_URL:
        # Streams held by Pushpin: one ordered publish for the whole ingest (grip.py).
        # Streams held here directly still get their events from the listener manager.
        publish_to_pushpin(outgoing)
        manager = get_listener_manager()
        for channel, event_type, data, seq in outgoing:
            manager.add_to_queues(channel, Event(channel, event_type, data, id=seq))
    if fanout.enabled():
        fanout.broadcast(outgoing)
