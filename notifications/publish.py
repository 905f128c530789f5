"""Publishing: the one place that hands stored notifications to django-eventstream.

Called only from transaction.on_commit (see services.notification_ingest), so a
rolled-back ingest never reaches a client.
"""

import logging

from django_eventstream import send_event

from notifications import fanout
from notifications.models import Notification
from notifications.representation import encode_data, notification_data

logger = logging.getLogger(__name__)

EVENT_TYPE = "notification"


def station_channel(station_code: str) -> str:
    # The channel is the station code itself, so the stream cursor ("ST001:42") reads
    # the same in-process and behind Pushpin, where django-eventstream builds it.
    return station_code


def publish_notifications(notifications: list[Notification]) -> None:
    """Hand committed notifications to this process's streams (and Pushpin, when
    GRIP_URL is set) through send_event, then to the other processes (REDIS_URL)."""
    outgoing = []
    for notification in notifications:
        channel = station_channel(notification.station.code)
        data = encode_data(notification_data(notification))
        # Behind Pushpin, publish before answering the sender (async_publish=False):
        # posts that follow each other reach Pushpin in sequence order, so it never
        # sees a prev-id gap and never has to call back to recover.
        send_event(channel, EVENT_TYPE, data, json_encode=False, async_publish=False)
        outgoing.append((channel, EVENT_TYPE, data, notification.seq))
    if fanout.enabled():
        fanout.broadcast(outgoing)
