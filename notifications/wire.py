"""The one wire format: what a stored notification looks like on the wire (the API
body and the SSE data line), the SSE frame, and the stream cursor.

One function builds a notification's data for the ingest response, the live publish and
the log replay, so a client sees the same data whichever way an event reaches it (the
same bytes on SQLite; PostgreSQL's jsonb keeps an object's keys in its own order, so a
replayed `extra` may list them in another order than the live frame did).

Cursors read "ST001:42,ST002:7", one log position per station: the same format
django-eventstream uses for its compound event ids, so a cursor read from a stream works
as Last-Event-ID in every deployment size (Pushpin included).
"""

from urllib.parse import quote, unquote

from django.core.serializers.json import DjangoJSONEncoder

from notifications.models import Notification

NOTIFICATION_EVENT = "notification"  # the SSE event name of a notification's frame

# What an idle stream sends every CGM_SSE_HEARTBEAT_SECONDS, in-process or behind
# Pushpin: a comment line (keeps proxies from idling out; invisible to clients), or for
# ?heartbeat=1 a named event without an id, which EventSource delivers to the page (so
# it can tell a stalled connection) and which never moves the client's Last-Event-ID.
KEEPALIVE_COMMENT = ": keep-alive\n\n"
HEARTBEAT_FRAME = "event: heartbeat\ndata: {}\n\n"


def station_channel(station_code: str) -> str:
    # The channel is the station code itself, so the stream cursor ("ST001:42") reads
    # the same in-process and behind Pushpin, where Pushpin builds it from channel ids.
    return station_code


def iso_time(value):
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def notification_data(notification: Notification) -> dict:
    # Built once per row and kept on it: a new row is rendered for the ingest's answer,
    # for the local streams and for the other processes. The codes come from the
    # related rows; callers load them with select_related or already hold them
    # (ingest), so this never queries.
    data = notification.__dict__.get("_wire_data")
    if data is None:
        # An absent box or connector is known from its id. The descriptor's first read
        # of a null foreign key works its None out through a cache miss (an exception),
        # and a new row's data is rendered at its first read: that was most of its cost.
        box = notification.box if notification.box_id is not None else None
        connector = notification.connector if notification.connector_id is not None else None
        data = notification.__dict__["_wire_data"] = render_notification(
            notification,
            notification.station.code,
            box.code if box is not None else None,
            connector.code if connector is not None else None,
        )
    return data


def render_notification(
    notification: Notification, station_code: str, box_code: str | None, connector_code: str | None
) -> dict:
    """A notification's data, with its equipment's codes given: the log's replay reads
    the codes with the row (notifications/log.py) instead of loading three related
    rows per entry, and hands in a row of the fields read here, not a model instance."""
    return {
        "id": notification.message_id,
        "stationId": station_code,
        "boxId": box_code,
        "connectorId": connector_code,
        "faultType": notification.fault_type,
        "action": notification.action,
        "message": notification.message,
        "code": notification.code,
        "timestamp": iso_time(notification.occurred_at),
        "receivedAt": iso_time(notification.received_at),
        "seq": notification.seq,
        "extra": notification.extra,
    }


# One encoder for every frame's data (notifications' frames on the ingest's publisher,
# the derived changes' log entries with the stations locked, the log's replay):
# json.dumps(cls=...) builds a new encoder per call, a fifth of the cost of encoding a
# notification (5.4 against 4.2 µs, docs/PERFORMANCE.md, fifth session). An encoder
# keeps no state between calls (each call builds its own), so threads can share it.
_ENCODER = DjangoJSONEncoder(ensure_ascii=False)


def encode_data(data: dict) -> str:
    # Without indent the encoder never emits a newline, so this is one SSE data line.
    return _ENCODER.encode(data)


def sse_frame(event: str, data: str, event_id: str | None = None) -> str:
    """One Server-Sent Events frame; `data` is already a single line."""
    id_line = f"id: {event_id}\n" if event_id is not None else ""
    return f"event: {event}\n{id_line}data: {data}\n\n"


def escape_build_id(text: str) -> str:
    """Text for Pushpin content with the build-id filter, which reads "%" as the start
    of a format marker ("%I" is the stream's cursor): a literal "%" goes as "%%"."""
    return text.replace("%", "%%")


class CursorError(ValueError):
    pass


def format_cursor(positions: dict[str, int]) -> str:
    return ",".join(f"{quote(code)}:{seq}" for code, seq in positions.items())


def parse_cursor(text: str) -> dict[str, int]:
    positions: dict[str, int] = {}
    for part in text.split(","):
        code, sep, seq = part.strip().rpartition(":")
        if not sep or not code:
            raise CursorError(f"not a cursor part: {part!r}")
        try:
            value = int(seq)
        except ValueError:
            raise CursorError(f"not a sequence number: {seq!r}") from None
        if value < 0:
            raise CursorError(f"negative sequence number: {value}")
        positions[unquote(code)] = value
    return positions


def cursor_from_request(request) -> str | None:
    """Last-Event-ID header, else the last non-empty ?lastEventId= (EventSource polyfills)."""
    header = request.headers.get("Last-Event-ID", "").strip()
    if header:
        return header
    for value in reversed(request.GET.getlist("lastEventId")):
        if value.strip():
            return value.strip()
    return None
