"""GET /api/sse/stations/<code>/ and /api/sse/?station=A&station=B: live notification streams.

Why not django-eventstream's own `events` view: it reads storage in the request's
thread-sensitive executor, so each open stream pins an OS thread and a DB connection
(DESIGN.md trap 1), caps streams at 10 channels, and sends no cursor before the first
event. This view listens on the process's local channels (notifications/push/local.py)
and reads the log in a small shared thread pool, so threads and DB connections stay
bounded however many streams are open. Who may read a station is the channel manager's
answer (channels.py). The stream door (door.py) runs this view and carries the stream.

A stream's life: read the stations' log positions and, for a client that sent a
cursor, the first page of what it missed (with the caller's access, in the one trip of
the open to the database threads: door.py); register a listener; send the cursor and
that page, then any further pages from the log, then forward live events. An event
committed between those reads and the listening is caught by local_channels.newest()
(or, after a Redis outage, catch_ups()) and read from the log.
Live events are checked against the cursor: one already sent is skipped, one that
skips ahead (a publish overtaken by a later one, or a listener overflow) makes the
stream read the missing entries from the log. Nothing missed, nothing twice.
"""

import asyncio
import json
import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpResponse, StreamingHttpResponse

from access.policy import Principal
from access.revocation import watcher
from access.stream_auth import StreamAuthError, stream_principal
from cgm import db_health
from cgm.db_pool import after_failure, run_db
from cgm.failpoints import failpoint
from notifications.errors import ApiError, error_response
from notifications.log import LogPosition, log_entries_after, log_positions
from notifications.push.local import Listener, local_channels
from notifications.push.redis_fanout import subscriber
from notifications.streams.channels import forbidden_stations
from notifications.streams.keepalive import keepalive
from notifications.streams.pushpin import grip_last_cursor, grip_response, next_link_caller
from notifications.wire import (
    HEARTBEAT_FRAME,
    KEEPALIVE_COMMENT,
    CursorError,
    cursor_from_request,
    format_cursor,
    parse_cursor,
    sse_frame,
)
from stations.models import code_validator

logger = logging.getLogger(__name__)

# Longest a catch-up page waits for the client to take the previous one.
REPLAY_PACE_SECONDS = 10.0


def _error(status: int, error: str, message: str, fields: dict | None = None):
    return error_response(ApiError(status, error, message, fields))


def not_found(request):
    return _error(404, "not_found", f"No stream at {request.path}.")


def _requested_codes(request, station: str | None) -> list[str]:
    codes = [station] if station is not None else request.GET.getlist("station")
    # Also accept ?station=A,B; keep the caller's order, drop repeats.
    split = [part.strip() for code in codes for part in code.split(",") if part.strip()]
    return list(dict.fromkeys(split))


def station_stream(
    request,
    station: str | None = None,
    caller: str | None = None,
    after: str | None = None,
    tag: str | None = None,
):
    """Opens a stream. Runs on the stream database threads, middleware and all (door.py
    says why): its queries share one trip to those threads."""
    if request.method not in ("GET", "HEAD"):
        response = _error(405, "method_not_allowed", f"Method {request.method} not allowed.")
        response["Allow"] = "GET, HEAD"
        return response
    try:
        failpoint("stream.open")
        return _open_stream(request, station, caller, after, tag)
    except Exception as exc:
        return open_failed(exc)


def open_failed(exc: Exception):
    """On the database thread, for an open that raised: logged, the thread's connection
    cleaned up (db_pool.after_failure), and a clear, documented answer rather than a 500
    (the database did not answer, or anything else failed): nothing was sent yet, so
    the client simply opens again with the same cursor."""
    logger.exception("opening a stream failed")
    after_failure(exc)
    if isinstance(exc, DatabaseError):
        return _error(503, "unavailable", "The database did not answer; retry shortly.")
    return _error(503, "unavailable", "The stream could not open; retry shortly.")


def _open_stream(
    request, station: str | None, caller: str | None, after: str | None, tag: str | None
):
    grip = getattr(request, "grip", None)
    behind_pushpin = bool(grip and grip.proxied)
    # Pushpin following its next link for a stream it holds: the caller is in the path,
    # and so is the cursor of a replay cut at a page; otherwise (recovery) the stations
    # and positions are Pushpin's Grip-Last headers (notifications/streams/pushpin.py).
    next_link = caller is not None
    principal = None
    cursor = {}
    # Opt-in (the console asks for it): a client that can't see ": comments" (EventSource)
    # learns that a connection which stalled without closing is dead. Pushpin's next link
    # carries the choice in its path.
    heartbeat = request.GET.get("heartbeat") == "1"
    if next_link:
        if not behind_pushpin:
            return not_found(request)
        next_caller = next_link_caller(caller)
        if next_caller is None:
            return _error(400, "invalid", "Invalid next link.")
        principal, heartbeat = next_caller
        try:
            cursor = parse_cursor(after) if after else grip_last_cursor(request)
        except CursorError as exc:
            return _error(400, "invalid", "Malformed cursor.", {"after": [str(exc)]})
    codes = sorted(cursor) if next_link else _requested_codes(request, station)
    if not codes:
        return _error(400, "invalid", "Name at least one station.", {"station": ["Required."]})
    if len(codes) > settings.CGM_SSE_MAX_STATIONS:
        return _error(
            400,
            "invalid",
            f"At most {settings.CGM_SSE_MAX_STATIONS} stations per stream.",
            {"station": [f"{len(codes)} given."]},
        )
    bad = [code for code in codes if not code_validator.regex.match(code)]
    if bad:
        return _error(400, "invalid", "Malformed station code.", {"station": bad})

    cursor_text = None if next_link else cursor_from_request(request)
    if cursor_text:
        try:
            cursor = parse_cursor(cursor_text)
        except CursorError as exc:
            return _error(400, "invalid", "Malformed cursor.", {"Last-Event-ID": [str(exc)]})

    # Requests refused without the database got their 4xx above; from here on, fail at
    # once while the database is known to be away.
    db_health.check()
    readable = None
    if principal is None:
        try:
            principal, readable = stream_principal(request)
        except StreamAuthError as exc:
            if exc.status == 403:
                return _error(403, "forbidden", str(exc))
            return _error(401, "unauthenticated", str(exc))
    # Checked before existence: a caller learns nothing about stations it may not read.
    if readable is not None:
        forbidden = readable.forbidden(codes)
    else:
        forbidden = forbidden_stations(principal, codes)
    if forbidden and next_link:
        # Access was taken away while Pushpin held the stream: end it with a reason.
        return HttpResponse(_forbidden_frame(forbidden), content_type="text/event-stream")
    if forbidden:
        return _error(
            403, "forbidden", "Not allowed to read these stations.", {"station": forbidden}
        )

    catch_ups = local_channels.catch_ups()  # before the read: see NotificationStream
    positions = log_positions(codes)
    missing = [code for code in codes if code not in positions]
    if missing:
        return _error(404, "not_found", "Unknown station.", {"station": missing})

    if behind_pushpin:
        last, reset = resume_point(codes, positions, cursor)
        opening = "" if next_link else opening_frames(codes, last, reset)
        return grip_response(
            request,
            codes=codes,
            positions=positions,
            last=last,
            opening=opening,
            principal=principal,
            heartbeat=heartbeat,
            tag=tag,
        )

    notification_stream = NotificationStream(
        codes, cursor, positions, catch_ups, principal, heartbeat
    )
    notification_stream.replay_first_page()
    frames = notification_stream.events()
    response = StreamingHttpResponse(frames, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx and similar proxies would otherwise buffer the stream.
    response["X-Accel-Buffering"] = "no"
    # For the stream lane (stream_asgi.py), which carries the frames itself.
    response.notification_stream = notification_stream
    response.stream_frames = frames
    return response


def _forbidden_frame(stations: list[str]) -> str:
    return sse_frame("stream-error", json.dumps({"condition": "forbidden", "stations": stations}))


def resume_point(
    codes: list[str], positions: dict[str, LogPosition], client_cursor: dict[str, int]
) -> tuple[dict[str, int], dict[str, str]]:
    """Where a stream starts per station, and the stations whose cursor must be reset."""
    last: dict[str, int] = {}
    reset: dict[str, str] = {}
    for code in codes:
        position = positions[code]
        sent = client_cursor.get(code)
        if sent is None:
            last[code] = position.last_seq
        elif sent < position.pruned_through:
            reset[code] = "pruned"
            last[code] = position.last_seq
        elif sent > position.last_seq:
            reset[code] = "unknown-cursor"
            last[code] = position.last_seq
        else:
            last[code] = sent
    return last, reset


def opening_frames(codes: list[str], last: dict[str, int], reset: dict[str, str]) -> str:
    cursor = format_cursor(last)
    # The cursor goes out with the first bytes, so a client that drops before any
    # event can still resume exactly from here.
    out = f"retry: {settings.CGM_SSE_RETRY_MS}\n"
    out += sse_frame("stream-open", json.dumps({"stations": codes, "cursor": cursor}), cursor)
    if reset:
        # Never a silent gap: the client learns which stations lost history and
        # should reload it (the history API), then continues live from here.
        out += sse_frame(
            "stream-reset", json.dumps({"stations": list(reset), "reasons": reset}), cursor
        )
    return out


class NotificationStream:
    """One open stream: its cursor, its listener, and the frames it yields.
    (Slots: thousands of these stay open for hours.)"""

    __slots__ = (
        "codes",
        "principal",
        "last",
        "station_ids",
        "opening",
        "behind",
        "catch_ups",
        "listener",
        "closed",
        "ping",
        "keepalive_frame",
        "lost",
        "send_buffer_drained",
        "pacing",
    )

    def __init__(
        self,
        codes: list[str],
        client_cursor: dict[str, int],
        positions: dict[str, LogPosition],
        catch_ups: int,
        principal: Principal,
        heartbeat: bool = False,
    ):
        self.codes = codes
        self.principal = principal
        self.station_ids = {code: positions[code].station_id for code in codes}
        self.last, reset = resume_point(codes, positions, client_cursor)
        self.opening = opening_frames(codes, self.last, reset)
        # Stations whose log holds more than the client has: replayed first.
        self.behind = {code for code in codes if self.last[code] < positions[code].last_seq}
        self.catch_ups = catch_ups  # local_channels.catch_ups() before the positions read
        self.listener = Listener(set(codes))
        self.closed = False
        # With heartbeat=1, one heartbeat goes out as soon as the replay is done (pings
        # wait for it), so the client knows from the start that they arrive.
        self.ping = heartbeat
        self.keepalive_frame = HEARTBEAT_FRAME if heartbeat else KEEPALIVE_COMMENT
        self.lost: list[str] = []
        # The server's send-buffer state (door.py sets it from the ASGI scope), if any.
        self.send_buffer_drained = None
        self.pacing = None  # while the replay waits for the client: ends the wait

    def replay_first_page(self) -> None:
        """The first page of what the client missed, read now, with the positions: on
        the stream database threads, in the open's one trip, instead of a trip of its
        own once the stream runs (every client of a reconnect storm resumes). Read
        before listening, like the positions, and covered the same way: events()
        re-reads whatever was handed out meanwhile (newest()) or lost to a Redis outage
        (catch_ups()). A failure here refuses the open (503 + Retry-After)."""
        if self.behind:
            failpoint("stream.first_page")
            chunk, self.behind = self._replay(self.behind)
            self.opening += chunk

    def close(self) -> None:
        """The client went away (door.py): end at the next wake-up."""
        self.closed = True
        self.listener.wakeup.set()
        self._stop_pacing()

    def keepalive_due(self) -> None:
        self.ping = True
        self.listener.wakeup.set()

    def kick(self, lost: list[str]) -> None:
        """Access to `lost` was taken away (access/revocation.py)."""
        self.lost = lost
        self.listener.wakeup.set()
        self._stop_pacing()

    def _stop_pacing(self) -> None:
        if self.pacing is not None and not self.pacing.done():
            self.pacing.set_result(None)

    async def events(self):
        listener = self.listener
        # The positions were read when the stream opened, before this listens: an event
        # committed in between was either handed to this process's channels before
        # (newest() says so: read it from the log) or reaches the listener.
        local_channels.add(listener)
        watch = None
        try:
            behind = self.behind
            behind.update(
                code for code in self.codes if local_channels.newest(code) > self.last[code]
            )
            # (The positions and the first replay page were read before listening:
            # whatever this process handed out since is past self.last, above.)
            if local_channels.catch_ups() != self.catch_ups:
                # Every stream was told to re-read the log (Redis came back) after this
                # one read its positions and before it listened: it re-reads too.
                behind.update(self.codes)
            # An open stream may idle for hours: keep nothing it no longer needs.
            opening, self.opening, self.behind = self.opening, None, None
            subscriber.ensure_started()
            watch = watcher.watch(self.principal, self.codes, self.kick)
            keepalive.add(self)
            yield opening
            del opening
            while not self.closed:
                while behind and not (self.closed or self.lost):
                    await self._until_client_took_the_last_page()
                    if self.closed or self.lost:
                        break  # the wait ends early for these (close, kick)
                    chunk, behind = await self._catch_up(behind)
                    if chunk:
                        yield chunk

                queued, overflow = listener.take()
                chunk, behind = self._accept_live(queued)
                if chunk:
                    yield chunk
                if self.lost:
                    # Access was taken away: say why, then end the stream. The
                    # client's automatic reconnect is then refused with a 403.
                    yield _forbidden_frame(self.lost)
                    return
                if overflow:
                    behind = set(self.codes)
                if behind:
                    continue
                if self.ping:
                    # Keeps proxies from idling out: a comment line, invisible to clients,
                    # or the heartbeat event a client asked for.
                    self.ping = False
                    yield self.keepalive_frame
                    continue
                await listener.wakeup.wait()
        finally:
            keepalive.discard(self)
            if watch is not None:
                watcher.unwatch(watch)
            local_channels.remove(listener)

    async def _until_client_took_the_last_page(self) -> None:
        """Before each page of a catch-up, until the client has taken what was written
        (cgm/server.py, door.py), REPLAY_PACE_SECONDS at most. Read as fast as the
        database answers, a long catch-up outran a client that was reading, and the
        server dropped it as one that had stopped (its backlog limit); a client that
        really stopped still meets that limit, once the wait is over."""
        drained = self.send_buffer_drained() if self.send_buffer_drained else None
        if drained is None:
            return  # the usual case: nothing is waiting to go out
        # close() and kick() end the wait at once: a client gone, or whose access was
        # taken away, does not wait out the page.
        self.pacing = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait(
                (drained, self.pacing),
                timeout=REPLAY_PACE_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self.pacing = None

    async def _catch_up(self, behind: set[str]) -> tuple[str, set[str]]:
        failpoint("stream.catch_up")
        return await run_db(self._replay, behind)

    def _replay(self, behind: set[str]) -> tuple[str, set[str]]:
        """A page of the log past the client's position, as frames, and the stations
        still behind after it. On a stream database thread."""
        page = settings.CGM_SSE_REPLAY_PAGE
        after = {self.station_ids[code]: (code, self.last[code]) for code in behind}
        entries = log_entries_after(after, page)
        out = []
        for entry in entries:
            # The log is the truth: take its order even across a pruned hole.
            if entry.seq > self.last[entry.station_code]:
                self.last[entry.station_code] = entry.seq
                out.append(sse_frame(entry.kind, entry.data, format_cursor(self.last)))
        return "".join(out), (behind if len(entries) >= page else set())

    def _accept_live(self, queued: dict) -> tuple[str, set[str]]:
        if queued:
            failpoint("stream.live")
        out = []
        gaps: set[str] = set()
        single = len(self.codes) == 1
        for code, items in queued.items():
            for item in items:
                expected = self.last[code] + 1
                if item.id is None or item.id < expected:
                    continue  # already sent (replayed from the log or delivered twice)
                if item.id > expected or code in gaps:
                    gaps.add(code)  # an earlier event is still missing: read the log
                    continue
                self.last[code] = item.id
                out.append(_single_station_frame(item) if single else self._frame(item))
        return "".join(out), gaps

    def _frame(self, item) -> str:
        return sse_frame(item.type, item.data, format_cursor(self.last))


def _single_station_frame(item) -> str:
    """The frame every one-station stream sends for this event: built once per event,
    not once per stream (its id, "ST001:42", is the same for all of them)."""
    frame = item.single_station_frame
    if frame is None:
        frame = sse_frame(item.type, item.data, format_cursor({item.channel: item.id}))
        item.single_station_frame = frame
    return frame
