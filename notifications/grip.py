"""Stream requests behind Pushpin (GRIP_URL set): Django answers, Pushpin holds.

Django replies at once with what the client missed (from the log) and a GRIP
instruction: hold the connection open on the stations' channels, starting after
these sequence numbers. publish.py publishes each notification to Pushpin with
id = station sequence and prev-id = sequence - 1, contiguous per channel, so Pushpin
delivers in order without calling back (DESIGN.md trap 8). Pushpin builds each
event's `id:` from its channels' last ids with the `id_format` below, which yields
exactly the cursor format of the in-process stream ("ST001:42,ST002:7").

Pushpin calls the "next link" itself: immediately when the replay was cut at a page
(`link=next&lastEventId=...`), and to recover if it ever sees a gap
(`link=next&recover=true`, positions in the Grip-Last header). Those requests carry a
signed `es-meta` naming the caller, whose access is checked again.
"""

import http.client
import json
import logging
import threading
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.core import signing
from django.http import HttpResponse
from django_eventstream.utils import sse_encode_event
from gripcontrol import Channel, parse_grip_uri

from access.policy import Principal
from notifications.cursor import format_cursor
from notifications.eventlog import LogPosition, log_entries_after
from notifications.representation import sse_frame

logger = logging.getLogger(__name__)

NEXT_LINK_SALT = "cgm.grip-next-link"
_connections = threading.local()


def channel_name(code: str) -> str:
    # django-eventstream's naming (its send_event would reach these subscriptions too).
    return f"events-{quote(code)}"


def principal_channel(principal: Principal) -> str:
    """A per-caller channel: publishing a close here ends that caller's streams."""
    return f"principal-{principal.kind}-{principal.id}"


def next_link_principal(request) -> Principal | None:
    try:
        data = signing.loads(request.GET.get("es-meta", ""), salt=NEXT_LINK_SALT)
    except signing.BadSignature:
        return None
    return Principal(data["k"], data["i"])


def grip_last_cursor(request) -> dict[str, int]:
    """Positions Pushpin reports in Grip-Last when it asks to recover."""
    cursor = {}
    for channel, last_id in request.grip.last.items():
        if channel.startswith("events-") and last_id.isdigit():
            cursor[channel[len("events-") :]] = int(last_id)
    return cursor


def _escape(text: str) -> str:
    # Content on channels with the build-id filter treats "%" as a format marker.
    return text.replace("%", "%%")


def grip_response(
    request,
    *,
    codes: list[str],
    positions: dict[str, LogPosition],
    last: dict[str, int],
    opening: str,
    principal: Principal,
) -> HttpResponse:
    """Body (opening frames, replay) plus the hold instruction. Runs in a DB thread."""
    page = settings.CGM_SSE_REPLAY_PAGE
    after = {positions[code].station_id: (code, last[code]) for code in codes}
    entries = log_entries_after(after, page)
    more = len(entries) >= page
    body = [opening]
    for entry in entries:
        if entry.seq > last[entry.station_code]:
            last[entry.station_code] = entry.seq
            body.append(sse_frame("notification", entry.data, format_cursor(last)))

    response = HttpResponse(_escape("".join(body)), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"

    params = request.GET.copy()
    for name in ("link", "lastEventId", "recover", "es-meta", "token"):
        params.pop(name, None)
    params["link"] = "next"
    params["es-meta"] = signing.dumps({"k": principal.kind, "i": principal.id}, salt=NEXT_LINK_SALT)
    if more:
        params["lastEventId"] = format_cursor(last)
    else:
        params["recover"] = "true"

    instruct = request.grip.start_instruct()
    # Pushpin also fetches the next link every `timeout` seconds as a safety net (120 s
    # by default): with tens of thousands of streams that is steady load for nothing,
    # since a gap already triggers a recovery fetch.
    instruct.set_next_link(
        f"{request.path}?{params.urlencode()}", timeout=settings.CGM_GRIP_REFRESH_SECONDS
    )
    for code in codes:
        channel = Channel(channel_name(code), prev_id=str(last[code]))
        channel.filters.append("build-id")
        instruct.add_channel(channel)
    instruct.add_channel(Channel(principal_channel(principal)))
    if not more:
        instruct.set_hold_stream()
    instruct.meta["id_format"] = ",".join(
        f"{_escape(quote(code))}:%({channel_name(code)})s" for code in codes
    )
    instruct.set_keep_alive(": keep-alive\n\n", settings.CGM_SSE_HEARTBEAT_SECONDS)
    return response


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
