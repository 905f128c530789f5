"""Publishing: the one function that hands committed log entries to the streams.

`publish_frames` runs only once the log entries are committed (the ingest's services
register it with `transaction.on_commit`; the group committer's publisher thread calls
it in commit order; operator actions register it too), so a rolled-back change never
reaches a client. It sends each frame to the three places streams are held:

- Pushpin nodes (GRIP_URL): one ordered publish for the whole group (pushpin.py);
- this process's streams (local.py);
- the other server processes, over Redis (REDIS_URL, redis_fanout.py).

Why not django-eventstream's `send_event` here: docs/EVENT_FLOW.md, "Why the project
delivers locally itself".
"""

from django.conf import settings

from notifications.push import redis_fanout
from notifications.push.local import local_channels
from notifications.push.pushpin import publish_to_pushpin


def publish_frames(frames) -> None:
    """Committed log entries (notification, status and fault frames: LiveEvents, or
    an iterable rendering them), in log order."""
    frames = list(frames)
    outgoing = [(frame.channel, frame.type, frame.data, frame.id) for frame in frames]
    if settings.GRIP_URLS:
        publish_to_pushpin(outgoing)
    local_channels.deliver(frames)
    if redis_fanout.enabled():
        redis_fanout.broadcast(outgoing)
