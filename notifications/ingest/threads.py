"""The threads the ingest view runs on (door.py).

A fixed pool that lives as long as the process, instead of Django's new thread per
request: no thread start and stop per post. Each request's database connection goes
back after it (to the PostgreSQL pool; SQLite keeps its own). Writes are not theirs to
serialise: they hand them to the one writer of the process (group_commit.py).
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections

_threads = ThreadPoolExecutor(
    max_workers=settings.CGM_INGEST_THREADS,
    thread_name_prefix="ingest",
)


def _then_release_connection(fn, args):
    try:
        return fn(*args)
    finally:
        # Hand the connection back (to the PostgreSQL pool; SQLite keeps its own):
        # Django's end-of-request clean-up runs on another thread and never sees it.
        close_old_connections()


async def on_ingest_thread(fn, *args):
    """await fn(*args), run on the ingest pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_threads, _then_release_connection, fn, args)
