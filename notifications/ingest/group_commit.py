"""Group commit: the ingests waiting in this process share one transaction.

Why: every ingest pays a database round trip, a commit (a WAL flush) and a publish,
and posters spent most of their time waiting on those, one request at a time per
connection. Here one writer thread takes every request queued while it was busy and
stores them together: one statement and one commit for the whole group on PostgreSQL
(services.py), one transaction on SQLite, one publish. Under light load a group is one
request and nothing waits longer than before.

Each request still gets its own answer. If a group's transaction fails (a duplicate id
raced in from another process, say), its requests are stored again one by one, so one
request's trouble is never another's.

Used by the ingest's ASGI lane (notifications/ingest_asgi.py); the DRF view and the
tests store directly (notifications/services.py), which is the same code for a group
of one.
"""

import logging
import queue
import threading
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connection

from cgm import db_health
from notifications.ingest.rows import prepare_rows
from notifications.ingest.services import Stored, notification_ingest, notification_ingest_group
from notifications.ingest.validation import EventInput
from notifications.push.publish import publish_frames

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    events: list[EventInput]
    done: threading.Event = field(default_factory=threading.Event)
    stored: list[Stored] | None = None
    error: BaseException | None = None


class _Publisher:
    """Publishes committed groups on a thread of its own, in commit order (one thread,
    first in first out), so the writer goes on to the next group at once. Whatever
    queued up while it was publishing goes out together: one Redis message however far
    behind it fell, so it catches up instead of falling further behind. (Pushpin gets
    them from the relay, push/pushpin_relay.py.)"""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ingest-publisher", daemon=True)
        self._thread.start()

    def publish_later(self, frames) -> None:
        self._queue.put(frames)

    def _run(self) -> None:
        while True:
            frames = list(self._queue.get())
            while True:
                try:
                    frames.extend(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                publish_frames(frames)
            except Exception:
                # As after any commit: a failed publish is caught up from the log.
                logger.exception("publish failed; streams catch up from the log")


class GroupCommitter:
    def __init__(self, max_events: int):
        self.max_events = max_events
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._publisher: _Publisher | None = None
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def store(self, *, events: list[EventInput]) -> list[Stored]:
        """notification_ingest(events=events), committed with whatever else is waiting.
        Blocks the calling thread (an ingest thread) until its group has committed."""
        if connection.in_atomic_block:
            return notification_ingest(events=events)
        self._ensure_writer()
        prepare_rows(events)
        # Give this thread's database connection back first: the writer may need one
        # from the pool, and ingest threads holding theirs while they wait for it
        # could take the last ones (seen under load as a 10 s pool timeout).
        close_old_connections()
        request = _Request(events)
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.stored

    def _ensure_writer(self) -> None:
        if self._writer is None:
            with self._start_lock:
                if self._writer is None:
                    self._publisher = _Publisher()
                    self._writer = threading.Thread(
                        target=self._run, name="ingest-writer", daemon=True
                    )
                    self._writer.start()

    def _run(self) -> None:
        while True:
            group = self._next_group()
            try:
                self._commit(group)
            finally:
                for request in group:
                    request.done.set()

    def _next_group(self) -> list[_Request]:
        group = [self._queue.get()]
        size = len(group[0].events)
        while size < self.max_events:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            group.append(request)
            size += len(request.events)
        return group

    def _commit(self, group: list[_Request]) -> None:
        if _database_away(group):
            return
        try:
            for request, stored in zip(
                group,
                notification_ingest_group([r.events for r in group], self._publisher.publish_later),
                strict=True,
            ):
                request.stored = stored
            return
        except Exception as exc:
            # The writer keeps its connection between groups (no pool round trip per
            # group); after a failure it takes a fresh one, in case this one is broken.
            _drop_connection()
            db_health.failed(exc)
            if len(group) == 1 or db_health.is_connection_failure(exc):
                # The database itself is away: storing each request alone would only
                # make each wait for it again. All get the error (503) at once.
                for request in group:
                    request.error = exc
                return
            logger.warning("group of %d ingests failed (%r); storing each alone", len(group), exc)
        for request in group:
            if _database_away([request]):
                continue  # a connection failure of this loop opened the breaker
            try:
                request.stored = notification_ingest(
                    events=request.events, publish=self._publisher.publish_later
                )
            except Exception as exc:
                _drop_connection()
                db_health.failed(exc)
                request.error = exc


def _database_away(requests: list[_Request]) -> bool:
    """While the database is known to be away (cgm/db_health.py): every request gets
    that error at once (503 with Retry-After), nothing tried. Not a failure of the
    group: storing its requests one by one would make each wait for the database's
    pool again (DB_POOL_TIMEOUT apiece, seen as a 3 s answer to a post)."""
    try:
        db_health.check()
    except db_health.DatabaseAwayError as exc:
        for request in requests:
            request.error = exc
        return True
    return False


def _drop_connection() -> None:
    try:
        connection.close()
    except Exception:
        logger.debug("closing a failed connection failed", exc_info=True)


committer = GroupCommitter(max_events=settings.CGM_INGEST_GROUP_MAX_EVENTS)
