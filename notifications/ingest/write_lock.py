"""One writer at a time per process on SQLite.

SQLite allows a single writer. With BEGIN IMMEDIATE the others wait in SQLite's busy
handler, which sleeps in steps of up to 100 ms: under 16 concurrent posters that
turned a 2 ms insert into seconds of latency. Queuing the writers of this process on
a plain lock first hands the database over the moment it is free. Other processes
(management commands) still meet busy_timeout, which is what it is for.
PostgreSQL needs no such thing: its row locks queue writers per station.
"""

import threading
from contextlib import nullcontext

from django.db import connection

_sqlite_writer = threading.Lock()


def write_lock():
    return _sqlite_writer if connection.vendor == "sqlite" else nullcontext()
