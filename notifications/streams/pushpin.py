"""Stream requests behind Pushpin (GRIP_URL set): Django answers, Pushpin holds.

Django replies at once with what the client missed (from the log) and a GRIP
instruction: hold the connection open on the stations' channels, starting after
these sequence numbers. notifications/push/pushpin.py publishes each notification with
id = station sequence and prev-id = sequence - 1, contiguous per channel, so Pushpin
delivers in order without calling back (DESIGN.md trap 8). Pushpin builds each
event's `id:` from its channels' last ids with the `id_format` below, which yields
exactly the cursor format of the in-process stream ("ST001:42,ST002:7").

Pushpin calls the "next link" itself: immediately when the replay was cut at a page
(`link=next&lastEventId=...`), and to recover if it ever sees a gap
(`link=next&recover=true`, positions in the Grip-Last header). Those requests carry a
signed `es-meta` naming the caller, whose access is checked again.
"""

from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.http import HttpResponse
from gripcontrol import Channel

from access.policy import Principal
from notifications.log import LogPosition, log_entries_after
from notifications.push.pushpin import channel_name, principal_channel
from notifications.wire import format_cursor, sse_frame

NEXT_LINK_SALT = "cgm.grip-next-link"


def next_link_principal(request) -> Principal | None:
    try:
        data = signing.loads(request.GET.get("es-meta", ""), salt=NEXT_LINK_SALT)
    except signing.BadSignature:
        return None
    return Principal(data["k"], data["i"], data.get("s", ""), data.get("g"))


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
            body.append(sse_frame(entry.kind, entry.data, format_cursor(last)))

    response = HttpResponse(_escape("".join(body)), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"

    params = request.GET.copy()
    for name in ("link", "lastEventId", "recover", "es-meta", "token"):
        params.pop(name, None)
    params["link"] = "next"
    # Pushpin calls the next link itself (the URL never reaches the client): it names the
    # caller, with its session or grant, whose access is checked again on each call.
    meta = {
        "k": principal.kind,
        "i": principal.id,
        "s": principal.session_key,
        "g": principal.grant,
    }
    params["es-meta"] = signing.dumps(meta, salt=NEXT_LINK_SALT)
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
