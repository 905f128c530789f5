"""POST /api/event under Daphne: the one door every ingest request takes.

cgm/asgi.py sends every request for /api/event here, whoever sends it and however it
authenticates (Authorization or X-Api-Key, signed or not, cross-origin with CORS, a
session). The door reads the body up to CGM_INGEST_MAX_BODY_BYTES, then runs the
DRF view (notifications/ingest/api.py) through Django's security, CORS, session and
authentication middleware, all of it on one of the ingest's threads (threads.py),
outside Django's per-request thread context (cgm/doors.py says why). Every answer is
the view's.
"""

from django.conf import settings

from cgm.doors import django_request, host_refusal, middleware_chain, release, send_response
from notifications.ingest.api import event_ingest
from notifications.ingest.threads import on_ingest_thread

INGEST_PATHS = ("/api/event", "/api/event/")

# The middleware a browser's or a device's post needs (settings.MIDDLEWARE minus CSRF,
# which DRF's SessionAuthentication enforces itself, and the HTML-page ones).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


def serves(scope) -> bool:
    return scope["type"] == "http" and scope["path"] in INGEST_PATHS


def _rendered(request):
    # DRF answers with a lazily rendered response, which Django's handler renders after
    # the view; here that happens on the same ingest thread.
    return event_ingest(request).render()


# A sync chain: the middleware and the view run together on one ingest thread, one
# hop from the event loop per request.
_handler = middleware_chain(_rendered, MIDDLEWARE)


def answer(request):
    """The view's rendered answer, made on an ingest thread; the request is let go there
    too (cgm/doors.py release), so nothing of it is left for the garbage collector."""
    response = None
    try:
        response = _handler(request)
        return response
    finally:
        release(request, response)  # a failure too (guarded() answers it): let go


class _ClientGoneError(Exception):
    pass


async def ingest_app(scope, receive, send):
    try:
        body, too_large = await _read_body(receive, scope)
    except _ClientGoneError:
        return  # the sender left before its body arrived: nothing to store or answer
    request = django_request(scope, body)
    refusal = host_refusal(request)
    if refusal is not None:
        await send_response(send, refusal)
        return
    # The view answers 413 before it does anything else (api.py, EventIngestView.initial).
    request.body_too_large = too_large
    response = await on_ingest_thread(answer, request)
    await send_response(send, response)


async def _read_body(receive, scope) -> tuple[bytes, bool]:
    """(body, False), or (b"", True) past the size limit: the rest is never read."""
    limit = settings.CGM_INGEST_MAX_BODY_BYTES
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return b"", True
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError  # never act on a body cut short
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
