"""ASGI entry point, served by Daphne: `daphne cgm.asgi:application`."""

import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cgm.settings")
django.setup(set_prefix=False)

STREAM_PATH_PREFIX = "/api/sse/"


class StreamAwareASGIHandler(ASGIHandler):
    """Django's handler, minus the per-request thread for long-lived streams.

    Django runs each request inside its own asgiref ThreadSensitiveContext, and the
    first sync call within it (a signal receiver, a middleware hook) creates a worker
    thread that lives until the response ends. For a stream that is "forever": one
    thread per open dashboard. Outside such a context those few sync calls share one
    thread, and the stream's log reads use their own small pool (notifications/stream.py).
    """

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(STREAM_PATH_PREFIX):
            await self.handle(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


application = StreamAwareASGIHandler()
