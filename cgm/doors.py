"""ASGI doors: one endpoint served by an async Django view through Django middleware,
outside Django's ASGI handler. `cgm/asgi.py` sends /api/event and /api/sse/ here.

Why not Django's ASGIHandler for those two: it runs each request in its own asgiref
ThreadSensitiveContext, and the first sync call inside it (the `request_started`
receivers, every MiddlewareMixin hook) starts a thread that lives until the response
ends. For a stream that is a thread per open dashboard for hours (DESIGN.md trap 1); for
the ingest a thread start and stop per post. A door is the same pieces, used through
their public interfaces: a `django.core.handlers.asgi.ASGIRequest`, the middleware
classes themselves composed as Django composes them (each built around the next
`get_response`), and the view. Sync middleware hooks then share asgiref's one
process-wide thread instead of a thread per request.

What a door does not do, unlike Django's handler: send `request_started` (the doors'
own threads hand their database connections back themselves; `request_finished` comes
only from `response.close()`, on the event loop, which holds none) or resolve URLs
(each door serves one view). And a door lets go of its request once answered
(`release`), so that nothing of it waits for the garbage collector.
"""

import logging
from io import BytesIO

from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.utils.module_loading import import_string

from notifications.errors import BAD_HOST, ApiError, error_response

logger = logging.getLogger(__name__)


def middleware_chain(view, middleware: list[str]):
    """`view` wrapped in `middleware` (dotted paths, outermost first), as Django's
    BaseHandler.load_middleware builds its chain from settings.MIDDLEWARE. A sync view
    gives a sync chain (every hook runs on the caller's thread: no hops); an async view
    an async one (sync hooks hop to asgiref's shared thread)."""
    handler = view
    for path in reversed(middleware):
        handler = import_string(path)(handler)
    return handler


def django_request(scope, body: bytes = b"") -> ASGIRequest:
    request = ASGIRequest(scope, BytesIO(body))
    if "CONTENT_LENGTH" not in request.META and body:
        # A chunked body, read whole by the door: say how long it is, as Django's and
        # DRF's parsers look at CONTENT_LENGTH to decide whether there is a body at all.
        request.META["CONTENT_LENGTH"] = str(len(body))
    return request


def host_refusal(request):
    """400 in the one JSON error shape when the Host is not in ALLOWED_HOSTS (what
    Django's CommonMiddleware checks through the same `get_host`), else None."""
    try:
        request.get_host()
    except DisallowedHost as exc:
        logger.warning("refused Host: %s", exc)
        return error_response(BAD_HOST)
    return None


def response_start(response, extra_headers=()) -> dict:
    """The ASGI `http.response.start` message of a Django response, cookies included."""
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
    ]
    for cookie in response.cookies.values():
        headers.append((b"set-cookie", cookie.output(header="").strip().encode("latin-1")))
    return {
        "type": "http.response.start",
        "status": response.status_code,
        "headers": [*headers, *extra_headers],
    }


async def send_response(send, response) -> None:
    """A complete (non-streaming) Django response."""
    content = response.content
    length = (
        [] if response.has_header("Content-Length") else [(b"content-length", b"%d" % len(content))]
    )
    await send(response_start(response, length))
    await send({"type": "http.response.body", "body": content})
    response.close()


def release(request, response=None) -> None:
    """Unlink an answered request's objects, so that reference counting frees them now.

    Django's AuthenticationMiddleware gives the request `user` and `auser`, which refer
    back to it; a DRF view, its Request and its Response refer to one another (the view
    keeps both, and the Request's parser context and the Response's renderer context
    name the view and the Request). Left so, every post left 43-62 objects (a batch
    about 100) that only Python's cyclic collector frees: at 100 posts a second a worker collected
    every 7-9 s, pausing for 100-200 ms each time on a busy machine, a share of the
    ingest's latency tail (docs/PERFORMANCE.md, thirteenth session). Called once the
    middleware and the view are done with the request; the response keeps its status,
    headers, cookies and rendered content."""
    request.__dict__.clear()
    renderer_context = getattr(response, "renderer_context", None)  # a DRF Response's
    if renderer_context:
        drf_request = renderer_context.get("request")
        if drf_request is not None:
            drf_request.parser_context.clear()
        renderer_context.clear()


def guarded(app):
    """`app`, with any exception it raises turned into an answer, never passed to Daphne.

    Daphne answers an escaped exception with an HTML 500, and if the response had
    already started, its attempt to do so raises inside its application checker, the
    loop that answers failed requests and cleans up finished ones, which then stops for
    good. Here the exception is logged once and answered with a 500 in the one JSON
    error shape. (An open stream that fails is ended by the stream door itself, which
    knows its headers are out; nothing wraps `send` on that hot path.)
    """

    async def guarded_app(scope, receive, send):
        try:
            await app(scope, receive, send)
        except Exception:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if scope["type"] != "http":
                return
            try:
                await send_response(send, error_response(_INTERNAL))
            except Exception:
                # Already answering (Daphne refuses a second start): end that answer.
                try:
                    await send({"type": "http.response.body", "body": b""})
                except Exception:
                    logger.debug("could not end the failed response", exc_info=True)

    return guarded_app


_INTERNAL = ApiError(500, "internal", "The server failed on this request; it was logged.")
