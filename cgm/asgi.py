"""ASGI entry point, served by Daphne: `daphne cgm.asgi:application`.

Three doors, by path only: every request for /api/event takes the ingest door, every
request under /api/sse/ the stream door (cgm/doors.py says why those two are served
outside Django's ASGI handler), and everything else Django's own handler.
"""

import gc
import os

import django
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cgm.settings")
django.setup(set_prefix=False)

from cgm.doors import guarded  # noqa: E402 (needs the apps loaded)
from notifications.ingest import door as ingest_door  # noqa: E402
from notifications.push.pushpin_relay import relay  # noqa: E402
from notifications.streams import door as stream_door  # noqa: E402
from stations import lookup  # noqa: E402

_django = ASGIHandler()

# Behind Pushpin (GRIP_URL): this process's relay thread, which publishes every
# process's commits to Pushpin when it holds the relay's lock (pushpin_relay.py).
relay.start()

# The equipment every post names, loaded before the first post instead of by it.
lookup.preload_at_start()


@guarded
async def application(scope, receive, send):
    if ingest_door.serves(scope):
        await ingest_door.ingest_app(scope, receive, send)
    elif stream_door.serves(scope):
        await stream_door.stream_app(scope, receive, send)
    else:
        await _django(scope, receive, send)


# Garbage collection in the server process. Streams keep many objects alive for hours,
# and Python's full collections walk all of them: with 2,000 open streams each full
# collection paused the event loop for 100-200 ms, every few seconds, and that was the
# tail of the delivery latency (docs/PERFORMANCE.md). So: the start-up heap (Django,
# DRF, Twisted; never garbage) is frozen out of every collection, and the youngest
# generation is collected every CGM_GC_THRESHOLDS[0] allocations instead of 700, so
# short-lived cycles (a request's objects) die young instead of piling into the oldest
# generation and triggering full collections. The two doors leave no cycles at all
# (cgm/doors.py release): with streams behind Pushpin a worker now goes whole runs
# without a collection; what is left is other requests' (the admin, the API) and the
# live objects of streams being opened.
gc.collect()
gc.freeze()
gc.set_threshold(*settings.CGM_GC_THRESHOLDS)
