"""Publishing: the one function that hands committed log entries to the streams.

`publish_frames` runs only once the log entries are committed (the ingest's services
register it with `transaction.on_commit`; the group committer's publisher thread calls
it in commit order; operator actions register it too), so a rolled-back change never
reaches a client. It sends each frame to the three places streams are held:

- this process's streams (local.py);
- the other server processes, over Redis (REDIS_URL, redis_fanout.py).

Pushpin nodes (GRIP_URL) get them from the relay instead (pushpin_relay.py): one
publisher for every process, in each station's order, which the transactions that
write log entries wake.

Why not django-eventstream's `send_event` here: docs/EVENT_FLOW.md, "Why the project
delivers locally itself".
"""

from notifications.push import redis_fanout
from notifications.push.local import local_channels


def publish_frames(frames) -> None:
    """Committed log entries (notification, status and fault frames: LiveEvents, or
    an iterable rendering them), in log order."""
    frames = list(frames)
    local_channels.deliver(frames)
    if redis_fanout.enabled():
        redis_fanout.broadcast([(f.channel, f.type, f.data, f.id) for f in frames])
