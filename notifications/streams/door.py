"""GET /api/sse/...: the one door every stream request takes under Daphne.

cgm/asgi.py sends every request under /api/sse/ here (dashboards with their session,
fetch clients with a key, EventSource with ?token=, cross-origin pages, Pushpin's signed
requests). The door runs the stream view (view.py) through Django's security, CORS,
session and authentication middleware (and django_grip's when Pushpin is configured),
outside Django's per-request thread context: cgm/doors.py says why.

Opening a stream is sync work from end to end: the caller's credentials, its access,
the stations' log positions, the first replay page of a client that resumes, behind
Pushpin the hold instruction. So
the middleware chain and the view run as one sync call on the stream database threads
(cgm/db_pool.py): one trip off the event loop per open. Run as an async chain, each
sync middleware hook and each query was a trip of its own, the hooks all through
asgiref's one shared thread: a reconnect storm queued there. An error, or
Pushpin's hold instruction, is sent as the view made it; an open stream is carried here,
frame by frame, and the request is let go while it is open. One small task per stream
waits for the client to leave.
"""

import asyncio
import logging

from django.conf import settings
from django.urls import Resolver404, resolve

from cgm.db_pool import run_on_db_threads
from cgm.doors import (
    django_request,
    host_refusal,
    middleware_chain,
    release,
    response_start,
    send_response,
)
from cgm.failpoints import failpoint
from cgm.server import SEND_BUFFER
from notifications.streams import view

logger = logging.getLogger(__name__)

STREAM_PREFIX = "/api/sse/"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if settings.GRIP_URLS:
    # Checks Pushpin's signature (request.grip) and turns the view's hold instruction
    # into GRIP headers.
    MIDDLEWARE.insert(1, "django_grip.GripMiddleware")


def serves(scope) -> bool:
    return scope["type"] == "http" and scope["path"].startswith(STREAM_PREFIX)


def _view(request):
    try:
        match = resolve(request.path_info)
    except Resolver404:
        match = None
    if match is None or match.func is not view.station_stream:
        return view.not_found(request)
    return view.station_stream(request, *match.args, **match.kwargs)


_handler = middleware_chain(_view, MIDDLEWARE)  # a sync chain: the view is sync


def _open_on_db_thread(request):
    try:
        return _handler(request)
    except Exception as exc:
        # The view answers its own failures (a 503 that still passes the middleware,
        # CORS headers included); this is a failure in the middleware itself (a session
        # save when the database went away): the same 503 and clean-up, without the
        # middleware's headers.
        return view.open_failed(exc)


async def _open(request):
    return await run_on_db_threads(_open_on_db_thread, request)


async def stream_app(scope, receive, send):
    request = django_request(scope)
    refusal = host_refusal(request)
    if refusal is not None:
        await send_response(send, refusal)
        return
    response = await _open(request)
    release(request)  # freed now, not by the garbage collector (cgm/doors.py)
    del request
    notification_stream = getattr(response, "notification_stream", None)
    if notification_stream is None:
        await send_response(send, response)
        return
    head = response_start(response)
    frames = response.stream_frames  # the stream's own generator of text frames
    # Whether the client has taken what was written (cgm/server.py): the stream's
    # replay paces its pages with it.
    send_buffer = scope.get("extensions", {}).get(SEND_BUFFER)
    notification_stream.send_buffer_drained = send_buffer["drained"] if send_buffer else None
    del response  # nothing of it is needed while the stream is open

    # Carried here rather than in a helper: one coroutine frame less per open stream.
    gone = asyncio.ensure_future(_until_disconnect(receive, notification_stream))
    failed = False
    try:
        await send(head)
        del head
        async for frame in frames:
            failpoint("stream.encode")
            # backslashreplace: a lone surrogate (only possible inside a JSON string, in a
            # row stored before ingest refused them) goes out as its JSON escape, valid
            # JSON, instead of failing this stream at that row on every reconnect.
            body = frame.encode("utf-8", "backslashreplace")
            await send({"type": "http.response.body", "body": body, "more_body": True})
    except Exception:
        # The headers are out: end the stream (never leave it open and silent); its
        # client reconnects with its cursor and loses nothing.
        logger.exception("stream %s failed; ending it", scope.get("path"))
        failed = True
    finally:
        gone.cancel()
        await frames.aclose()  # unregisters the stream's listener now, not at GC
    if failed or not notification_stream.closed:
        # The stream ended itself (access taken away): end the response too.
        await send({"type": "http.response.body", "body": b""})


async def _until_disconnect(receive, notification_stream) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    notification_stream.close()
