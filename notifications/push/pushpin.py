"""Publishing to Pushpin (GRIP_URL set): what a committed event sends to every node.

One request per committed ingest group, from the ingest's publisher thread in commit
order (ingest/group_commit.py), with id = the station's seq and prev-id = seq - 1,
contiguous per channel, so Pushpin delivers in order without calling back (DESIGN.md
trap 8). The stream side (the hold instruction Django answers with) is
notifications/streams/pushpin.py.
"""

import http.client
import json
import logging
import threading
from urllib.parse import quote, urlsplit

from django.conf import settings
from django_eventstream.utils import sse_encode_event
from gripcontrol import parse_grip_uri

from access.policy import Principal

logger = logging.getLogger(__name__)

_connections = threading.local()


def channel_name(code: str) -> str:
    # django-eventstream's naming (its send_event would reach these subscriptions too).
    return f"events-{quote(code)}"


def principal_channel(principal: Principal) -> str:
    """A per-caller channel: publishing a close here ends that caller's streams."""
    return f"principal-{principal.kind}-{principal.id}"


def publish_to_pushpin(events: list[tuple[str, str, str, int]]) -> None:
    """Publish (channel, type, data, seq) in one request to Pushpin's publish endpoint.

    One request per committed ingest group, from the ingest's publisher thread in
    commit order (group_commit.py): Pushpin gets each station's events in sequence
    order (no prev-id gaps, no recovery calls), and a batch of 100 costs one round
    trip, not 100. On failure nothing is lost: Pushpin sees the gap at the station's
    next event and recovers from the log.
    """
    items = []
    for channel, event_type, data, seq in events:
        content = sse_encode_event(event_type, data, event_id="%I", escape=True)
        items.append(
            {
                "channel": channel_name(channel),
                "id": str(seq),
                "prev-id": str(seq - 1),
                "formats": {"http-stream": {"content": content, "content-filters": ["build-id"]}},
            }
        )
    _publish(items)


def _publish(items: list[dict]) -> None:
    """One request to each Pushpin node's publish endpoint (GRIP_URL lists them), on
    this thread's keep-alive connections. A node that fails does not hold up the others."""
    body = json.dumps({"items": items})
    for url in settings.GRIP_URLS:
        _publish_to(url, body)


def _publish_to(url: str, body: str) -> None:
    for attempt in (1, 2):
        try:
            connection = _publish_connection(url)
            connection.request(
                "POST", "/publish/", body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                raise OSError(f"Pushpin answered {response.status}")
            return
        except (OSError, http.client.HTTPException):
            _connections.by_url.pop(url, None)  # stale keep-alive connection: open a new one
            if attempt == 2:
                logger.warning(
                    "publish to Pushpin %s failed; it recovers from the log",
                    urlsplit(url).netloc,
                    exc_info=True,
                )


def close_streams_of(principals) -> None:
    """End every stream Pushpin holds for these callers (their access may have
    narrowed). Each stream subscribed its caller's channel (principal_channel); its
    client reconnects with Last-Event-ID and Django checks its access again."""
    items = [
        {"channel": principal_channel(p), "formats": {"http-stream": {"action": "close"}}}
        for p in principals
    ]
    if items:
        _publish(items)


def _publish_connection(url: str) -> http.client.HTTPConnection:
    if not hasattr(_connections, "by_url"):
        _connections.by_url = {}
    connection = _connections.by_url.get(url)
    if connection is None:
        target = urlsplit(parse_grip_uri(url)["control_uri"])
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=5)
        _connections.by_url[url] = connection
    return connection
