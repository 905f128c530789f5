"""Streams as a small ASGI app: Django's view opens them, this module carries them.

Why: Django's ASGI handler keeps a request, a response and two tasks alive for as long
as a stream is open, and every frame passes through its streaming-response wrappers.
With thousands of dashboards that was most of a stream's memory and a good part of
the CPU per delivered event (docs/PERFORMANCE.md). Here:

- the request is opened by the very same view (notifications/stream.py,
  station_stream), with the session and the user set up as Django's session and
  authentication middleware would, so every check and every error is the view's own;
- an error or any other answer is sent as it is;
- a live stream is carried directly: the headers, then each frame straight to the
  server. The request object is let go once the stream is open. One small task per
  stream waits for the client to leave.

Which requests take it (`takes_lane`): GET on a stream URL with nothing for Django's
middleware to do (cgm/lanes.py) but django_grip's, which the lane runs itself when
Pushpin is configured. Anything else goes through Django as before.
"""

import asyncio
from functools import partial
from importlib import import_module
from io import BytesIO

from django.conf import settings
from django.contrib.auth.middleware import auser, get_user
from django.core.handlers.asgi import ASGIRequest
from django.urls import Resolver404, resolve
from django.utils.functional import SimpleLazyObject
from django_grip import GripMiddleware

from cgm.lanes import Headers, is_secure, plain_request, security_headers
from notifications import stream

STREAM_PREFIX = "/api/sse/"


def takes_lane(scope) -> bool:
    if scope["method"] != "GET" or not scope["path"].startswith(STREAM_PREFIX):
        return False
    headers = Headers.from_scope(scope)
    return plain_request(scope, headers) and _view(scope) is not None


# Behind Pushpin, django_grip's middleware checks Pushpin's signature on the request
# and turns the view's hold instruction into GRIP headers on the answer: the lane runs
# its two hooks around the view, as Django's stack would.
_grip = GripMiddleware(lambda request: None) if settings.GRIP_URLS else None


def _view(scope):
    """The stream view's URL match, or None; resolved once per request (kept on the
    scope: takes_lane and stream_app both ask)."""
    if "cgm.stream_view" not in scope:
        try:
            match = resolve(scope["path"])
        except Resolver404:
            match = None
        scope["cgm.stream_view"] = match if match and match.func is stream.station_stream else None
    return scope["cgm.stream_view"]


async def stream_app(scope, receive, send):
    secure = is_secure(scope, Headers.from_scope(scope))
    match = _view(scope)
    request = _django_request(scope)
    if _grip is not None:
        _grip.process_request(request)
    response = await match.func(request, *match.args, **match.kwargs)
    if _grip is not None:
        response = _grip.process_response(request, response)
    # Break the request's reference cycles (request.user's closure refers back to the
    # request) so it is freed now rather than at a full garbage collection.
    request.__dict__.clear()
    notification_stream = getattr(response, "notification_stream", None)
    if notification_stream is None:
        await _send_response(send, response, secure)
        return
    head = _head(response, secure)
    frames = response.stream_frames  # the stream's own generator of text frames
    del request, response, match  # nothing of them is needed while the stream is open
    # Nor what the routing kept on the scope, which Daphne holds as long as the stream.
    scope.pop("cgm.headers", None)
    scope.pop("cgm.stream_view", None)

    # Carry the stream (here rather than in a helper: one coroutine frame less per
    # open stream).
    gone = asyncio.ensure_future(_until_disconnect(receive, notification_stream))
    try:
        await send(head)
        del head
        async for frame in frames:
            body = frame.encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
    finally:
        gone.cancel()
        await frames.aclose()  # unregisters the stream's listener now, not at GC
    if not notification_stream.closed:
        # The stream ended itself (access taken away): end the response too.
        await send({"type": "http.response.body", "body": b""})


def _django_request(scope) -> ASGIRequest:
    """The request as the view expects it after Django's session and authentication
    middleware (a GET has no body)."""
    request = ASGIRequest(scope, BytesIO())
    session_store = import_module(settings.SESSION_ENGINE).SessionStore
    request.session = session_store(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    request.user = SimpleLazyObject(lambda: get_user(request))
    request.auser = partial(auser, request)
    return request


def _head(response, secure: bool, extra=()) -> dict:
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
    ]
    return {
        "type": "http.response.start",
        "status": response.status_code,
        "headers": [*headers, *extra, *security_headers(secure)],
    }


async def _send_response(send, response, secure: bool) -> None:
    content = response.content
    await send(_head(response, secure, [(b"content-length", str(len(content)).encode())]))
    await send({"type": "http.response.body", "body": content})


async def _until_disconnect(receive, notification_stream) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    notification_stream.close()
