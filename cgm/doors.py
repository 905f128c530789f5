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

What a door does not do, unlike Django's handler: send `request_started` /
`request_finished` (the doors' own threads hand their database connections back
themselves) or resolve URLs (each door serves one view).
"""

from io import BytesIO

from django.core.handlers.asgi import ASGIRequest
from django.utils.module_loading import import_string


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
    return ASGIRequest(scope, BytesIO(body))


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
