"""A small shared thread pool for the database reads of long-lived async code.

Streams (and the revocation watcher) read the database from async code. Doing that
in each request's own thread would cost a thread and a connection per open stream;
here every such read shares CGM_SSE_DB_THREADS threads, so both stay bounded.
"""

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

_pool = ThreadPoolExecutor(max_workers=settings.CGM_SSE_DB_THREADS, thread_name_prefix="stream-db")


async def run_db(fn, *args):
    def call():
        try:
            return fn(*args)
        finally:
            # Closes the connection unless CONN_MAX_AGE says to keep it (SQLite keeps
            # one per pool thread; a PostgreSQL pool gets it back at once).
            close_old_connections()

    return await sync_to_async(call, thread_sensitive=False, executor=_pool)()
