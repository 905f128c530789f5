"""Publishing: the one place that hands stored notifications to django-eventstream.

Called only from transaction.on_commit (see services.notification_ingest), so a
rolled-back ingest never reaches a client.
"""

import logging

from django_eventstream import send_event

from notifications.models import Notification
from notifications.representation import encode_data, notification_data

logger = logging.getLogger(__name__)

EVENT_TYPE = "notification"


def station_channel(station_code: str) -> str:
    # The channel is the station code itself, so the stream cursor ("ST001:42") reads
    # the same in-process and behind Pushpin, where django-eventstream builds it.
    return station_code


def publish_notifications(notifications: list[Notification]) -> None:
    for notification in notifications:
        send_event(
            station_channel(notification.station.code),
            EVENT_TYPE,
            encode_data(notification_data(notification)),
            json_encode=False,
        )
