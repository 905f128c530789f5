"""Publishing to Pushpin (GRIP_URL set): the request the relay sends every node.

One request per batch the relay (pushpin_relay.py) reads from the log (several, in
order, past CGM_PUSHPIN_PUBLISH_MAX_BYTES), with id = the station's seq and prev-id =
seq - 1, contiguous per channel and from one publisher, so Pushpin delivers in order
without calling back (DESIGN.md trap 8). The stream side (the hold instruction Django
answers with) is notifications/streams/pushpin.py.
"""

import http.client
import json
import logging
import threading
from urllib.parse import quote, urlsplit

from django.conf import settings
from gripcontrol import parse_grip_uri

from access.policy import Principal
from notifications.push.size_limit import joined_under
from notifications.wire import escape_build_id, sse_frame

logger = logging.getLogger(__name__)

_connections = threading.local()
# Each request to a node: PUBLISH_ATTEMPTS tries, each given PUBLISH_TIMEOUT_SECONDS to
# connect and to answer. A node that never answers costs their product per request.
PUBLISH_ATTEMPTS = 2
PUBLISH_TIMEOUT_SECONDS = 5


def channel_name(code: str) -> str:
    # django-eventstream's naming (its send_event would reach these subscriptions too).
    return f"events-{quote(code)}"


def principal_channel(principal: Principal) -> str:
    """A per-caller channel: publishing a close here ends that caller's streams."""
    return f"principal-{principal.kind}-{principal.id}"


def publish_to_pushpin(events: list[tuple[str, str, str, int]]) -> list[str]:
    """Publish (channel, type, data, seq) in one request to Pushpin's publish endpoint
    (several, in order, past CGM_PUSHPIN_PUBLISH_MAX_BYTES: _bodies).

    Called by the relay (pushpin_relay.py), the one publisher of every channel: Pushpin
    gets each station's entries in sequence order (no prev-id gaps, no recovery
    calls), and a batch costs one round trip, not one per entry. Returns the GRIP URLs
    of the nodes that did not take it: the relay then hints those nodes' streams to
    read the log (hint_streams_of).
    """
    items = []
    for channel, event_type, data, seq in events:
        # Pushpin's build-id filter puts the stream's cursor where "%I" stands. The
        # frame is the one every stream sends (wire.py); django-eventstream's
        # sse_encode_event gives the same bytes but escapes "%" a character at a time in
        # Python: 21.5 against 0.5 µs for a 315-byte frame (docs/SCALING.md, eighth
        # session).
        content = sse_frame(event_type, escape_build_id(data), event_id="%I")
        items.append(
            {
                "channel": channel_name(channel),
                "id": str(seq),
                "prev-id": str(seq - 1),
                "formats": {"http-stream": {"content": content, "content-filters": ["build-id"]}},
            }
        )
    return _publish(items)


def _publish(items: list[dict], urls: list[str] | None = None) -> list[str]:
    """One request to each Pushpin node's publish endpoint (GRIP_URL lists them, or
    `urls`), on this thread's keep-alive connections. A node that fails does not hold
    up the others; returns the URLs of those that failed (their later bodies are not
    sent: they would only be held, after the gap)."""
    bodies = _bodies(items)
    failed = []
    for url in settings.GRIP_URLS if urls is None else urls:
        if not all(_publish_to(url, body) for body in bodies):
            failed.append(url)
    return failed


def _bodies(items: list[dict]) -> list[str]:
    """The items as publish bodies of at most CGM_PUSHPIN_PUBLISH_MAX_BYTES, in order.
    Pushpin refuses a larger body whole, and then every channel in it would wait out
    Pushpin's message_wait (5 s) for the items it missed and recover from the log (a
    relay that fell behind reads a page of up to 500 entries at once). An item larger than the
    limit goes alone (and is refused: its streams recover from the log)."""
    limit = settings.CGM_PUSHPIN_PUBLISH_MAX_BYTES
    whole = json.dumps({"items": items})  # ASCII: its length is its size in bytes
    if len(whole) <= limit:
        return [whole]  # the usual case: one request, one encoding
    # The same text as json.dumps of {"items": chunk}, for each chunk.
    return joined_under([json.dumps(item) for item in items], limit, '{"items": [', "]}", ", ")


def _publish_to(url: str, body: str) -> bool:
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            connection = _publish_connection(url)
            connection.request(
                "POST", "/publish/", body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                raise OSError(f"Pushpin answered {response.status}")
            return True
        except (OSError, http.client.HTTPException):
            _connections.by_url.pop(url, None)  # stale keep-alive connection: open a new one
            if attempt == PUBLISH_ATTEMPTS:
                logger.warning(
                    "publish to Pushpin %s failed; its streams read the log",
                    urlsplit(url).netloc,
                    exc_info=True,
                )
    return False


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


def hint_streams_of(station_codes, urls: list[str] | None = None) -> list[str]:
    """Make every stream Pushpin holds on these stations (on every node, or on `urls`)
    read the log through its next link (Pushpin's `hint` action): what was committed
    without reaching Pushpin (a relay's failover, a failed publish: pushpin_relay.py)
    reaches them from there. Returns the URLs of the nodes that did not take it."""
    items = [
        {"channel": channel_name(code), "formats": {"http-stream": {"action": "hint"}}}
        for code in station_codes
    ]
    return _publish(items, urls) if items else []


def _publish_connection(url: str) -> http.client.HTTPConnection:
    if not hasattr(_connections, "by_url"):
        _connections.by_url = {}
    connection = _connections.by_url.get(url)
    if connection is None:
        target = urlsplit(parse_grip_uri(url)["control_uri"])
        connection = http.client.HTTPConnection(
            target.hostname, target.port, timeout=PUBLISH_TIMEOUT_SECONDS
        )
        _connections.by_url[url] = connection
    return connection
