"""Publishing: the one function that hands committed notifications to the streams.

`publish_notifications` runs only once the rows are committed (the ingest's services
register it with `transaction.on_commit`; the group committer's publisher thread calls
it in commit order), so a rolled-back ingest never reaches a client. It sends each
event to the three places streams are held:

- Pushpin nodes (GRIP_URL): one ordered publish for the whole group (pushpin.py);
- this process's streams (local.py);
- the other server processes, over Redis (REDIS_URL, redis_fanout.py).

Why not django-eventstream's `send_event` here: docs/EVENT_FLOW.md, "Why the project
delivers locally itself".
"""

from django.conf import settings

from notifications.models import Notification
from notifications.push import redis_fanout
from notifications.push.local import LiveEvent, local_channels
from notifications.push.pushpin import publish_to_pushpin
from notifications.wire import EVENT_TYPE, encode_data, notification_data, station_channel


def publish_notifications(notifications: list[Notification]) -> None:
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
        publish_to_pushpin(outgoing)
    local_channels.deliver([LiveEvent(*event) for event in outgoing])
    if redis_fanout.enabled():
        redis_fanout.broadcast(outgoing)
