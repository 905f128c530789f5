"""ASGI entry point, served by Daphne: `daphne cgm.asgi:application`."""

import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cgm.settings")
django.setup(set_prefix=False)

from django.db import connection  # noqa: E402

# Served outside Django's per-request thread context (see the class below). The
# ingest only on SQLite: PostgreSQL commits wait for the WAL flush, and concurrent
# request threads are what lets it flush many commits at once (measured: one shared
# thread capped PostgreSQL ingest at 70 events/s).
SHARED_THREAD_PREFIXES = (
    ("/api/sse/", "/api/event") if connection.vendor == "sqlite" else ("/api/sse/",)
)


class StreamAwareASGIHandler(ASGIHandler):
    """Django's handler, minus the per-request thread for streams and ingest.

    Django runs each request inside its own asgiref ThreadSensitiveContext, and the
    first sync call within it (a signal receiver, a middleware hook, a sync view)
    creates a worker thread that lives until the response ends.

    - For a stream that is "forever": one thread per open dashboard. Outside such a
      context those few sync calls share one thread, and the stream's log reads use
      their own small pool (cgm/db_pool.py).
    - For the ingest it is a new thread, a new database connection and a new cache
      client per request: measurable at hundreds of posts a second. Outside the
      context the ingest runs on its own fixed pool of threads (notifications/api.py).
    """

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(SHARED_THREAD_PREFIXES):
            await self.handle(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


application = StreamAwareASGIHandler()
