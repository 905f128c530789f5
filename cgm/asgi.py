"""ASGI entry point, served by Daphne: `daphne cgm.asgi:application`."""

import gc
import os

import django
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cgm.settings")
django.setup(set_prefix=False)

from cgm import twisted_content_type  # noqa: E402
from notifications import ingest_asgi, stream_asgi  # noqa: E402 (needs the apps loaded)

twisted_content_type.install()  # a tenth of the CPU of a small POST (see the module)

# Streams and ingest: served outside Django's per-request thread context, with a
# shorter middleware stack (see the classes below).
API_PREFIXES = ("/api/sse/", "/api/event")

# Middleware that does nothing for streams and the ingest (no HTML forms, no flash
# messages, no frames), yet costs thread round trips per request under ASGI: every
# MiddlewareMixin hook runs through sync_to_async. Security, CORS, CommonMiddleware
# (Content-Length on API answers, which simple device clients rely on), sessions and
# authentication stay.
NOT_FOR_API = {
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
}


class APIASGIHandler(ASGIHandler):
    """Django's handler for /api/sse/ and /api/event, minus the per-request thread.

    Django runs each request inside its own asgiref ThreadSensitiveContext, and the
    first sync call within it (a signal receiver, a middleware hook, a sync view)
    creates a worker thread that lives until the response ends.

    - For a stream that is "forever": one thread per open dashboard. Outside such a
      context those few sync calls share one thread, and the stream's log reads use
      their own small pool (cgm/db_pool.py).
    - For the ingest it is a new thread, a new database connection and a new cache
      client per request. Outside the context the ingest runs on its own fixed pool of
      threads (notifications/api.py).
    """

    def load_middleware(self, is_async=False):
        # Built once at start-up, before any request: swapping the setting for the
        # duration of this call affects nothing else.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = [m for m in full if m not in NOT_FOR_API]
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full

    async def __call__(self, scope, receive, send):
        await self.handle(scope, receive, send)


_django = ASGIHandler()
_api = APIASGIHandler()


async def application(scope, receive, send):
    if scope["type"] == "http" and ingest_asgi.takes_lane(scope):
        await ingest_asgi.ingest_app(scope, receive, send)  # API-key posts of events
    elif scope["type"] == "http" and stream_asgi.takes_lane(scope):
        await stream_asgi.stream_app(scope, receive, send)  # live streams
    elif scope["type"] == "http" and scope["path"].startswith(API_PREFIXES):
        await _api(scope, receive, send)
    else:
        await _django(scope, receive, send)


# Garbage collection in the server process. Streams keep many objects alive for hours,
# and Python's full collections walk all of them: with 2,000 open streams each full
# collection paused the event loop for 100-200 ms, every few seconds, and that was the
# tail of the delivery latency (docs/PERFORMANCE.md). So: the start-up heap (Django,
# DRF, Twisted; never garbage) is frozen out of every collection, and the youngest
# generation is collected every CGM_GC_THRESHOLDS[0] allocations instead of 700, so
# short-lived cycles (a request's objects) die young instead of piling into the oldest
# generation and triggering full collections.
gc.collect()
gc.freeze()
gc.set_threshold(*settings.CGM_GC_THRESHOLDS)
