"""Stream requests behind Pushpin (GRIP_URL set): Django answers, Pushpin holds.

Django replies at once with what the client missed (from the log) and a GRIP
instruction: hold the connection open on the stations' channels, starting after
these sequence numbers. notifications/push/pushpin.py publishes each notification with
id = station sequence and prev-id = sequence - 1, contiguous per channel, so Pushpin
delivers in order without calling back (DESIGN.md trap 8). Pushpin builds each
event's `id:` from its channels' last ids with the `id_format` below, which yields
exactly the cursor format of the in-process stream ("ST001:42,ST002:7").

Pushpin calls the "next link" itself: to recover when it sees a gap, and (Pushpin 1.36,
handler engine.cpp `sub_subscribed`) once for every stream on a channel one second
after that channel's first subscriber came. The positions then come in its Grip-Last
headers, which name every station channel of the stream; so the link itself only names
the caller, whose access is checked again on each call: /api/sse/next/<signed caller>/.
A replay cut at a page is the exception: Pushpin fetches the rest at once, before it
holds any channel, so without Grip-Last; that link carries the cursor too
(/api/sse/next/<signed caller>/<cursor>/<tag>/, see below).

One link per caller, the same for all its streams, is what keeps these calls moving.
Pushpin runs them through a rate limiter of 10 batches a second, a batch being up to
100 streams with the *same* next link (httpsession.cpp UpdateAction). A link that
differed per station and per second (the station list and a timestamped signature in
the query) made each stream a batch of its own: 10 streams a second recovered, the
others waited for seconds with their events queued. Pushpin would then also send one
origin request for all calls with the same path and Grip-Last headers ("auto-share",
which ignores the query); so the caller must be in the path, or two callers' calls at
the same positions could share one answer, and one of them hold the other's channels.

But no two streams' calls may share one origin request. Each stream holds one more
channel, TAG_CHANNEL, with a tag of its own as prev-id (`stream_tag`): nothing is ever
published there, but Pushpin names it in Grip-Last, so each stream's calls have a
sharing key of their own while the link, and so the batching, stays the same. (One
channel for all streams: Pushpin's one-second call after a channel's first subscriber
comes once, not once per stream.) A replay cut at a page is fetched before the stream
holds any channel, so its link carries the tag in the path instead.

Why: when the origin request of a shared call fails (Pushpin's proxy refuses it with a
502 when more than 100 new origin requests wait for zurl, zhttpmanager.cpp OUT_HWM, as
in the first seconds of 2,000 opens), the proxy answers the calls that had joined, but
goes on taking calls under that key and answers none of them, for as long as their
clients stay (proxysession.cpp: `rejectAll` does not stop `add`, and a call added after
it is never answered, so the shared session never finishes). Every later call of a
stream at those positions joined it: such a stream stayed in its recovery, queued
every event and sent only keep-alives (docs/SCALING.md, twelfth session). A call of its
own that fails is retried by Pushpin (five times, 1 to 16 s apart), then Pushpin ends
the stream, and the client resumes.
"""

import re
import secrets
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.http import HttpResponse
from django.urls import reverse
from gripcontrol import Channel

from access.policy import Principal
from notifications.log import LogPosition, log_entries_after
from notifications.push.pushpin import channel_name, principal_channel
from notifications.wire import (
    HEARTBEAT_FRAME,
    KEEPALIVE_COMMENT,
    escape_build_id,
    format_cursor,
    sse_frame,
)

NEXT_LINK_SALT = "cgm.grip-next-link"


def next_link_token(principal: Principal, heartbeat: bool) -> str:
    """The caller, signed for the next link's path, with whether its stream asked for
    heartbeat events (the answer to the link sets the keep-alive again). No timestamp:
    every such stream of one caller gets the same link (see above). It is accepted only
    in requests Pushpin signed (Grip-Sig), and the caller's access is checked on every
    use."""
    meta = {
        "k": principal.kind,
        "i": principal.id,
        "s": principal.session_key,
        "g": principal.grant,
    }
    if heartbeat:
        meta["h"] = 1
    return signing.Signer(salt=NEXT_LINK_SALT).sign_object(meta)


def next_link_caller(token: str) -> tuple[Principal, bool] | None:
    """The caller and its heartbeat choice from a next link's token; None if forged."""
    try:
        data = signing.Signer(salt=NEXT_LINK_SALT).unsign_object(token)
    except signing.BadSignature:
        return None
    principal = Principal(data["k"], data["i"], data.get("s", ""), data.get("g"))
    return principal, bool(data.get("h"))


TAG_CHANNEL = "stream-tag"
_TAG = re.compile(r"[0-9a-f]{16}")


def stream_tag(request, in_path: str | None) -> str:
    """The stream's own tag (see above): the one Pushpin reports in Grip-Last when it
    follows the next link, or the one in a replay page's link, else a new one."""
    for tag in (request.grip.last.get(TAG_CHANNEL), in_path):
        if tag and _TAG.fullmatch(tag):
            return tag
    return secrets.token_hex(8)


def grip_last_cursor(request) -> dict[str, int]:
    """Positions Pushpin reports in Grip-Last when it follows a next link: one per
    station channel of the stream (each has a prev-id)."""
    cursor = {}
    for channel, last_id in request.grip.last.items():
        if channel.startswith("events-") and last_id.isdigit():
            cursor[channel[len("events-") :]] = int(last_id)
    return cursor


def grip_response(
    request,
    *,
    codes: list[str],
    positions: dict[str, LogPosition],
    last: dict[str, int],
    opening: str,
    principal: Principal,
    heartbeat: bool,
    tag: str | None = None,
) -> HttpResponse:
    """Body (opening frames, replay) plus the hold instruction. Runs on a database
    thread, with the rest of the opening."""
    page = settings.CGM_SSE_REPLAY_PAGE
    # Only stations the client is behind on: a client at the head (most reconnects)
    # costs no read of the log.
    after = {
        positions[code].station_id: (code, last[code])
        for code in codes
        if last[code] < positions[code].last_seq
    }
    entries = log_entries_after(after, page) if after else []
    more = len(entries) >= page
    body = [opening]
    for entry in entries:
        if entry.seq > last[entry.station_code]:
            last[entry.station_code] = entry.seq
            body.append(sse_frame(entry.kind, entry.data, format_cursor(last)))
    if heartbeat and not more:
        # As on the direct path: one heartbeat once the replay is done, so the client
        # knows from the start that they arrive.
        body.append(HEARTBEAT_FRAME)

    response = HttpResponse(escape_build_id("".join(body)), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"

    instruct = request.grip.start_instruct()
    # Pushpin also fetches the next link every `timeout` seconds as a safety net (120 s
    # by default): with tens of thousands of streams that is steady load for nothing,
    # since a gap already triggers a recovery fetch.
    token = next_link_token(principal, heartbeat)
    # A replay cut at a page: Pushpin fetches the rest at once, without Grip-Last (it
    # holds no channel yet), so the cursor and the stream's tag go in the path.
    tag = stream_tag(request, tag)
    link = reverse("stream-page", args=[token, format_cursor(last), tag]) if more else None
    instruct.set_next_link(
        link or reverse("stream-next", args=[token]),
        timeout=settings.CGM_GRIP_REFRESH_SECONDS,
    )
    for code in codes:
        channel = Channel(channel_name(code), prev_id=str(last[code]))
        channel.filters.append("build-id")
        instruct.add_channel(channel)
    instruct.add_channel(Channel(principal_channel(principal)))
    instruct.add_channel(Channel(TAG_CHANNEL, prev_id=tag))
    if not more:
        instruct.set_hold_stream()
    instruct.meta["id_format"] = ",".join(
        f"{escape_build_id(quote(code))}:%({channel_name(code)})s" for code in codes
    )
    # Pushpin sends this whenever the stream has been idle that long: a comment line, or
    # for ?heartbeat=1 the heartbeat event (EventSource hides comments from the page).
    instruct.set_keep_alive(
        HEARTBEAT_FRAME if heartbeat else KEEPALIVE_COMMENT, settings.CGM_SSE_HEARTBEAT_SECONDS
    )
    return response
