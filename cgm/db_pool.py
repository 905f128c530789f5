"""A small shared thread pool for the database reads of long-lived async code.

Streams (and the revocation watcher) read the database from async code. Doing that
in each request's own thread would cost a thread and a connection per open stream;
here every such read shares CGM_SSE_DB_THREADS threads, so both stay bounded.

Each thread keeps its connection between reads: at most CGM_SSE_DB_THREADS of them per
process, and no trip to the connection pool per read (a reconnect storm makes
thousands of reads a second). A read that fails drops its thread's connection, so a
broken one (the database restarted) is replaced at the next read.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

from django.conf import settings
from django.db import connection

from cgm import db_health

_pool = ThreadPoolExecutor(max_workers=settings.CGM_SSE_DB_THREADS, thread_name_prefix="stream-db")


def _call(fn, args):
    db_health.check()  # fail at once while the database is known to be away
    try:
        return fn(*args)
    except Exception as exc:
        after_failure(exc)
        raise


def after_failure(exc: Exception) -> None:
    """On a database thread, after a call failed: open the breaker if the database is
    away, and drop the thread's connection (it may be broken)."""
    db_health.failed(exc)
    with suppress(Exception):  # already failing: the original error is what matters
        connection.close()


async def run_db(fn, *args):
    """await fn(*args), run on the shared database threads."""
    return await run_on_db_threads(_call, fn, args)


async def run_on_db_threads(fn, *args):
    """await fn(*args) on the shared database threads, as it is: for a caller that
    answers failures itself (db_health.check() first, after_failure() on an error), as
    the stream door's middleware chain does."""
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)
