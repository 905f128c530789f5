"""SQLite in WAL mode, so stream reads run while an ingest writes.

WAL is a property of the database file and survives connections; asking for it is
only needed once. Doing it on every new connection (Django opens one per request
thread) took a lock each time and queued behind writers.
"""

from django.db.backends.signals import connection_created
from django.dispatch import receiver


@receiver(connection_created, dispatch_uid="cgm-sqlite-wal")
def use_wal(sender, connection, **kwargs):
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        mode = cursor.fetchone()[0]
        if mode.lower() not in ("wal", "memory"):
            cursor.execute("PRAGMA journal_mode=WAL")
