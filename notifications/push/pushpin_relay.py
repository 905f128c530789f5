"""The Pushpin relay: every committed log entry reaches Pushpin in its station's order,
whichever server process committed it.

Why: Pushpin sequences each channel by `prev-id` (its handler's sequencer,
src/handler/sequencer.cpp). When a stream's position conflicts with a publish, Pushpin
forgets the channel's last id; an item that then arrives *after* its successor is held
for `message_wait` (5 s) and delivered anyway, which moves the channel's last id back,
so the items after it wait 5 s too. Each server process published its own commits, from
its own thread, so two processes committing consecutive numbers of one station could
reach Pushpin in the other order: 0-48 times in a 20 s run of the 2,000-stream
benchmark, and in about a third of the runs some streams were 5-7 s late
(docs/SCALING.md, "sixth session").

How: one relay per database publishes everything.
- A transaction that writes log entries announces them (each station's code and first
  and last new numbers) with PostgreSQL's NOTIFY, which is delivered once it commits,
  in commit order (`announce`; the ingest sends ANNOUNCE with its write statement).
- The relay is whichever process holds an advisory lock: normally `manage.py
  pushpin_relay`, a process of its own (scripts/run_multi.py starts one), because as a
  thread in a busy server process it spent most of its time waiting for that process's
  GIL (measured in the 2,000-stream benchmark: a batch of about 30 entries took 77 ms,
  of which the thread ran 8 %, and the deliveries' median latency went from 143-202
  to 280-460 ms). Every server process also runs
  a standby relay thread, which takes the role after CGM_RELAY_STANDBY_SECONDS without
  one (no relay process, or it died), so nothing goes unpublished. The relay LISTENs,
  reads the announced entries from the log
  (notifications/log.py `log_entries_after`, the reading a resuming stream gets) and
  publishes them (pushpin.py) in the order announced.
- So each channel has one publisher, which publishes its numbers in order. Order is
  promised within a station (DESIGN.md): the relay publishes what it reads at once
  station by station.
- SQLite (the embedded size, one process): the process's own commits wake the relay.
- A relay that takes the role cannot know what its predecessor published before it
  stopped: it LISTENs, then hints every station's streams (Pushpin's `hint` action) to
  read the log through their next link, which brings whatever was committed meanwhile.

Only when GRIP_URL is set: without Pushpin nothing is announced or relayed.
"""

import json
import logging
import os
import threading

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection, transaction

from cgm.pg_statements import Statement
from notifications.log import log_entries_after
from notifications.push.pushpin import hint_streams_of, publish_to_pushpin
from stations.models import Station

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "cgm_log"
# pg_advisory_lock's key: "CGMR" as a 32-bit number, only this relay uses it.
RELAY_LOCK_KEY = 0x43474D52
PAGE = 500  # entries per read of the log (one publish each)
# NOTIFY takes at most 8,000 bytes: an announcement of more stations goes as several.
_MAX_PAYLOAD = 7000
RETRY_SECONDS = 1.0
# How long the relay waits for a notification before checking its connection (and
# whether it is stopping).
LISTEN_TIMEOUT_SECONDS = 1.0

ANNOUNCE = Statement("cgm_announce", f"SELECT pg_notify('{NOTIFY_CHANNEL}', %s::text)")


Ranges = dict[int, tuple[str, int, int]]  # station pk -> (code, first, last number)


def payloads(ranges: Ranges) -> list[str]:
    """NOTIFY payloads for new entries: JSON lists of [pk, code, first, last], each
    under NOTIFY's limit."""
    out, chunk, size = [], [], 2
    for pk, (code, first, last) in ranges.items():
        entry = json.dumps([pk, code, first, last])
        if chunk and size + len(entry) + 1 > _MAX_PAYLOAD:
            out.append("[" + ",".join(chunk) + "]")
            chunk, size = [], 2
        chunk.append(entry)
        size += len(entry) + 1
    if chunk:
        out.append("[" + ",".join(chunk) + "]")
    return out


def announce(ranges: Ranges) -> None:
    """Inside the transaction that wrote these entries: tell the relay once it commits.
    (The PostgreSQL ingest sends ANNOUNCE in its own write statement.)"""
    if not settings.GRIP_URLS or not ranges:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for payload in payloads(ranges):
                cursor.execute(ANNOUNCE.sql, [payload])
    else:
        transaction.on_commit(lambda: relay.wake(ranges), robust=True)


class Relay:
    def __init__(self, standby_seconds: float = 0.0):
        # How long it waits before each try for the role: a server process's standby
        # leaves it to a relay process, which tries at once and every RETRY_SECONDS.
        self._standby = standby_seconds > 0
        self._try_every = max(standby_seconds, RETRY_SECONDS)
        self._changed = threading.Condition()
        self._pending: Ranges = {}  # announced, not published yet; in announcement order
        self._leading = False  # this process is the relay
        self._term = 0  # moves on each time it becomes the relay
        self._stopping = threading.Event()
        self._outage = False  # the listener's connection failed, and is not back yet
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    @property
    def leading(self) -> bool:
        return self._leading

    def start(self) -> None:
        """Start this process's relay threads (once): the worker, and on PostgreSQL the
        listener that waits to become the relay."""
        with self._start_lock:
            if self._threads or not settings.GRIP_URLS:
                return
            if connection.vendor == "postgresql":
                self._threads.append(threading.Thread(target=self._listen, name="relay-listen"))
            else:
                self._leading = True  # SQLite: one process, its own relay
            self._threads.append(threading.Thread(target=self._work, name="pushpin-relay"))
            for thread in self._threads:
                thread.daemon = True
                thread.start()

    def run(self) -> None:
        """The relay in the foreground (manage.py pushpin_relay)."""
        self.start()
        for thread in self._threads:
            thread.join()

    def stop(self) -> None:
        """Stop the threads (within a second or two) and give the relay's role up."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()

    def wake(self, ranges: Ranges) -> None:
        """New entries to publish. A station's ranges arrive in its number order (one
        relay, commit order), so they merge into one."""
        with self._changed:
            for pk, (code, first, last) in ranges.items():
                known = self._pending.get(pk)
                self._pending[pk] = (code, known[1], last) if known else (code, first, last)
            self._changed.notify()

    # The listener (PostgreSQL): the advisory lock makes one process the relay.

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen_once()
            except Exception:
                # Once per outage at WARNING (the rest at DEBUG): it tries every second.
                logger.log(
                    logging.DEBUG if self._outage else logging.WARNING,
                    "Pushpin relay: no connection to the database; trying again every %s s",
                    RETRY_SECONDS,
                    exc_info=True,
                )
                self._outage = True
            with self._changed:
                # No longer the relay: another process may be by now, and publishes
                # what is announced from then on.
                self._leading = False
                self._pending.clear()
            self._stopping.wait(RETRY_SECONDS)

    def _connect(self) -> psycopg.Connection:
        if settings.CGM_RELAY_DATABASE_URL:
            return psycopg.connect(settings.CGM_RELAY_DATABASE_URL, autocommit=True)
        return psycopg.connect(**connection.get_connection_params(), autocommit=True)

    def _listen_once(self) -> None:
        with self._connect() as listener:
            if self._outage:
                self._outage = False
                logger.warning("Pushpin relay: connected to the database again")
            # Another process is the relay while it holds the lock: its session ends
            # with its process, and then one of the others takes over.
            if self._standby and self._stopping.wait(self._try_every):
                return
            while not listener.execute(
                "SELECT pg_try_advisory_lock(%s)", [RELAY_LOCK_KEY]
            ).fetchone()[0]:
                if self._stopping.wait(self._try_every):
                    return
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            # Everything committed from here on is announced to this relay; before it,
            # streams read it from the log.
            _hint_every_station()
            with self._changed:
                self._leading = True
                self._term += 1
            logger.info("Pushpin relay: this process (pid %s) publishes", os.getpid())
            while not self._stopping.is_set():
                for note in listener.notifies(timeout=LISTEN_TIMEOUT_SECONDS):
                    entries = json.loads(note.payload)
                    self.wake({pk: (code, first, last) for pk, code, first, last in entries})
                listener.execute("SELECT 1")  # a dead connection raises here

    # The worker: reads what was announced and publishes it.

    def _work(self) -> None:
        while True:
            with self._changed:
                while not (self._pending and self._leading):
                    if self._stopping.is_set():
                        return
                    self._changed.wait()
                batch, self._pending = self._pending, {}
                term = self._term
            try:
                publish_entries(batch)
            except Exception:
                logger.exception(
                    "Pushpin relay: reading or publishing failed; trying again in %s s",
                    RETRY_SECONDS,
                )
                connection.close()  # in case it is the connection that failed
                self._stopping.wait(RETRY_SECONDS)
                self._retry(batch, term)
            finally:
                # No connection kept between batches (the pool's, on PostgreSQL).
                close_old_connections()

    def _retry(self, batch: Ranges, term: int) -> None:
        with self._changed:
            if term != self._term:
                return  # not the relay since: another one publishes
            # Before what was announced since, which comes after it in every station.
            merged = dict(batch)
            for pk, (code, first, last) in self._pending.items():
                merged[pk] = (code, merged[pk][1], last) if pk in merged else (code, first, last)
            self._pending = merged


def _hint_every_station() -> None:
    try:
        hint_streams_of(Station.objects.values_list("code", flat=True))
    finally:
        close_old_connections()


def publish_entries(ranges: Ranges) -> None:
    """Read these log entries and publish them, each station's in order."""
    after = {pk: (code, first - 1) for pk, (code, first, _) in ranges.items()}
    pks = {code: pk for pk, (code, _, _) in ranges.items()}
    while after:
        page = log_entries_after(after, PAGE)
        # Entries past an announced range belong to a later announcement.
        items = [i for i in page if i.seq <= ranges[pks[i.station_code]][2]]
        if items:
            publish_to_pushpin([(i.station_code, i.kind, i.data, i.seq) for i in items])
        if len(page) < PAGE:
            return
        for item in page:  # each station's entries in a page are a run from its position
            after[pks[item.station_code]] = (item.station_code, item.seq)
        after = {pk: position for pk, position in after.items() if position[1] < ranges[pk][2]}


# This server process's relay: the only one on SQLite; on PostgreSQL a standby.
relay = Relay(standby_seconds=settings.CGM_RELAY_STANDBY_SECONDS)
