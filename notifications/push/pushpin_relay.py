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
  publishes them (pushpin.py), each station's in order.
- So each channel has one publisher, which publishes its numbers in order. Order is
  promised within a station (DESIGN.md): the relay publishes what it reads at once
  station by station.
- SQLite (the embedded size, one process): the process's own commits wake the relay.
- A relay that takes the role cannot know what its predecessor published before it
  stopped: it LISTENs, then hints every station's streams (Pushpin's `hint` action) to
  read the log through their next link, which brings whatever was committed meanwhile.
  A node that does not take a publish gets the same hint for those stations.
- A standby that holds the role gives it back as soon as a relay process waits for it
  (the relay process waits visibly, in pg_locks).

Only when GRIP_URL is set: without Pushpin nothing is announced or relayed.
"""

import functools
import json
import logging
import os
import threading

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection, transaction

from cgm.pg_statements import Statement
from notifications.log import log_entries_after
from notifications.push.pushpin import (
    PUBLISH_ATTEMPTS,
    PUBLISH_TIMEOUT_SECONDS,
    hint_streams_of,
    publish_to_pushpin,
)
from notifications.push.size_limit import joined_under
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


def new_ranges(numbered, last_seq: dict[int, int]) -> Ranges:
    """What a transaction announces: `numbered` is (station, number) of its first new
    entries in log order (its notifications', in arrival order), a station's first one
    its first new entry; `last_seq` each station's last new number (past the derived
    entries too)."""
    ranges: Ranges = {}
    for station, seq in numbered:
        if station.pk not in ranges:
            ranges[station.pk] = (station.code, seq, last_seq[station.pk])
    return ranges


def payloads(ranges: Ranges) -> list[str]:
    """NOTIFY payloads for new entries: JSON lists of [pk, code, first, last], each at
    most _MAX_PAYLOAD bytes (NOTIFY's limit is 8,000)."""
    encoded = [json.dumps([pk, code, first, last]) for pk, (code, first, last) in ranges.items()]
    return joined_under(encoded, _MAX_PAYLOAD, "[", "]", ",")


def announce(numbered, last_seq: dict[int, int]) -> None:
    """Inside the transaction that wrote new log entries (`numbered` and `last_seq` as
    for new_ranges): tell the relay once it commits. (The PostgreSQL ingest sends
    ANNOUNCE in its own write statement.)"""
    if not settings.GRIP_URLS:
        return
    ranges = new_ranges(numbered, last_seq)
    if not ranges:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for payload in payloads(ranges):
                cursor.execute(ANNOUNCE.sql, [payload])
    else:
        transaction.on_commit(lambda: relay.wake(ranges), robust=True)


class Relay:
    def __init__(self, standby_seconds: float = 0.0):
        # A server process's standby (standby_seconds > 0) tries for the role only that
        # often, and gives it back as soon as a relay process waits for it; a relay
        # process waits for it all the time.
        self._standby = standby_seconds > 0
        self._try_every = max(standby_seconds, RETRY_SECONDS)
        self._changed = threading.Condition()
        self._pending: Ranges = {}  # announced, not published yet; in announcement order
        self._leading = False  # this process is the relay
        self._term = 0  # moves on each time it becomes the relay, or stops being it
        self._stopping = threading.Event()
        self._outage = False  # the listener's connection failed, and is not back yet
        self._busy = False  # the worker is publishing a batch
        self._waiting: psycopg.Connection | None = None  # waiting for the lock
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
            while thread.is_alive():
                waiting = self._waiting
                if waiting is not None:
                    waiting.cancel_safe()  # a relay process waiting for the lock
                thread.join(0.5)

    def wake(self, ranges: Ranges) -> None:
        """New entries to publish. A station's ranges arrive in its number order (one
        relay, commit order), so they merge into one."""
        with self._changed:
            for pk, (code, first, last) in ranges.items():
                known = self._pending.get(pk)
                self._pending[pk] = (code, known[1], last) if known else (code, first, last)
            self._changed.notify()

    def _still(self, term: int) -> bool:
        return self._leading and term == self._term and not self._stopping.is_set()

    # The listener (PostgreSQL): the advisory lock makes one process the relay.

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen_once()
            except Exception:
                # Once per outage at WARNING (the rest at DEBUG): it tries every second.
                logger.log(
                    logging.DEBUG if self._outage else logging.WARNING,
                    "Pushpin relay: the relay's database session failed; trying again every %s s",
                    RETRY_SECONDS,
                    exc_info=True,
                )
                self._outage = True
            with self._changed:
                # No longer the relay: another process may be by now, and publishes what
                # is announced from then on (after hinting every station's streams).
                self._leading = False
                self._term += 1
                self._pending.clear()
            self._stopping.wait(RETRY_SECONDS)

    def _connect(self) -> psycopg.Connection:
        url = settings.CGM_RELAY_DATABASE_URL
        params = {} if url else connection.get_connection_params()
        # A relay whose host vanishes without closing its connection must not keep the
        # role (the lock) until TCP gives up: keepalives on both sides, and a limit.
        session = psycopg.connect(url or "", **params, autocommit=True, **_KEEPALIVES)
        session.execute(
            "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
            "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000"
        )
        return session

    def _listen_once(self) -> None:
        if self._standby and self._stopping.wait(self._try_every):
            return
        with self._connect() as listener:
            if not self._take_role(listener):
                return
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._check_notifications_arrive(listener)
            if self._outage:
                self._outage = False
                logger.warning("Pushpin relay: the relay's database session is back")
            # Everything committed from here on is announced to this relay; before it,
            # streams read it from the log.
            _hint_every_station()
            with self._changed:
                self._leading = True
                self._term += 1
                self._changed.notify_all()
            logger.info("Pushpin relay: this process (pid %s) publishes", os.getpid())
            while not self._stopping.is_set():
                for note in listener.notifies(timeout=LISTEN_TIMEOUT_SECONDS):
                    self._announced(note.payload)
                if self._standby and _relay_process_waits(listener):
                    logger.info("Pushpin relay: a relay process waits; this one steps back")
                    self._step_back()
                    return  # the connection, the lock and LISTEN go with it
                listener.execute("SELECT 1")  # a dead connection raises here

    def _step_back(self) -> None:
        """Stop being the relay, and let a batch being published finish first: the next
        relay must not publish beside it."""
        with self._changed:
            self._leading = False
            self._term += 1
            self._pending.clear()
            # Bounded: a worker that died mid-batch must not keep the role for ever.
            wait = step_back_wait_seconds()
            if not self._changed.wait_for(lambda: not self._busy, wait):
                logger.warning(
                    "Pushpin relay: the batch in flight is still publishing after %s s; "
                    "stepping back anyway",
                    wait,
                )

    def _announced(self, payload: str) -> None:
        entries = json.loads(payload)
        if entries:
            self.wake({pk: (code, first, last) for pk, code, first, last in entries})

    def _check_notifications_arrive(self, listener: psycopg.Connection) -> None:
        """LISTEN does nothing through a pooler in transaction mode (the session is not
        ours): say so, instead of never publishing. (A relay's own check is an empty
        announcement; real ones that come first are kept.)"""
        # The server's own pid (a pooler in session mode gives its clients made-up ones).
        own_pid = listener.execute("SELECT pg_backend_pid()").fetchone()[0]
        listener.execute(f"NOTIFY {NOTIFY_CHANNEL}, '[]'")
        for note in listener.notifies(timeout=5):
            if note.payload == "[]" and note.pid == own_pid:
                return
            self._announced(note.payload)
        raise RuntimeError(
            "LISTEN gets no notifications: is DATABASE_URL a pooler in transaction mode? "
            "Set CGM_RELAY_DATABASE_URL to reach PostgreSQL directly"
        )

    def _take_role(self, listener: psycopg.Connection) -> bool:
        """Wait for the lock: a standby tries once (and comes back later), a relay
        process waits, visibly (pg_locks), which makes a standby holding it step back."""
        if self._standby:
            return listener.execute("SELECT pg_try_advisory_lock(%s)", [RELAY_LOCK_KEY]).fetchone()[
                0
            ]
        self._waiting = listener  # stop() cancels the wait
        try:
            if self._stopping.is_set():
                return False
            listener.execute("SELECT pg_advisory_lock(%s)", [RELAY_LOCK_KEY])
            return True
        except psycopg.errors.QueryCanceled:
            if self._stopping.is_set():
                return False
            raise
        finally:
            self._waiting = None

    # The worker: reads what was announced and publishes it.

    def _work(self) -> None:
        failures, failing_term = 0, None
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
                while not (self._pending and self._leading):
                    if self._stopping.is_set():
                        return
                    self._changed.wait()
                batch, self._pending = self._pending, {}
                term = self._term
                self._busy = True
            if term != failing_term:
                failures, failing_term = 0, term  # each term has its own tries
            try:
                publish_entries(batch, still=functools.partial(self._still, term))
                failures = 0
            except Exception:
                failures += 1
                logger.exception("Pushpin relay: reading or publishing failed (%d)", failures)
                try:
                    connection.close()  # in case it is the connection that failed
                except Exception:
                    logger.debug("closing the relay's connection failed", exc_info=True)
                if failures < MAX_TRIES:
                    self._stopping.wait(RETRY_SECONDS)
                    self._retry(batch, term)
                else:
                    # Not for ever: the stations' streams read the log instead.
                    failures = 0
                    logger.error(
                        "Pushpin relay: giving up %d stations' entries after %d tries; "
                        "hinting their streams to read the log",
                        len(batch),
                        MAX_TRIES,
                    )
                    hint_streams_of(code for code, _, _ in batch.values())
            finally:
                try:
                    # No connection kept between batches (the pool's, on PostgreSQL).
                    close_old_connections()
                except Exception:
                    logger.debug("returning the relay's connection failed", exc_info=True)

    def _retry(self, batch: Ranges, term: int) -> None:
        with self._changed:
            if term != self._term:
                return  # not the relay since: the next one hints every station instead
            # Before what was announced since, which comes after it in every station.
            merged = dict(batch)
            for pk, (code, first, last) in self._pending.items():
                merged[pk] = (code, merged[pk][1], last) if pk in merged else (code, first, last)
            self._pending = merged


MAX_TRIES = 5


def step_back_wait_seconds() -> float:
    """The longest a batch in flight can go on once it is no longer the relay's (it
    checks before each page): one page's publish, the hints to the nodes that refused
    it, and after a last failed try the hints to every node, each request to each node
    at most PUBLISH_ATTEMPTS tries of PUBLISH_TIMEOUT_SECONDS; then a retry's pause."""
    per_request = PUBLISH_ATTEMPTS * PUBLISH_TIMEOUT_SECONDS
    return 3 * per_request * len(settings.GRIP_URLS) + RETRY_SECONDS + 1.0


_KEEPALIVES = {
    "tcp_user_timeout": 10000,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "connect_timeout": 5,
}


def _relay_process_waits(listener: psycopg.Connection) -> bool:
    """Whether a relay process waits for the lock this standby holds."""
    return listener.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
        "AND classid = 0 AND objid = %s AND objsubid = 1 AND NOT granted AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()))",
        [RELAY_LOCK_KEY],
    ).fetchone()[0]


def _hint_every_station() -> None:
    try:
        hint_streams_of(Station.objects.values_list("code", flat=True))
    finally:
        close_old_connections()


def publish_entries(ranges: Ranges, still=lambda: True) -> None:
    """Read these log entries and publish them, each station's in order. `still()`
    says whether this is still the relay (checked before each publish). A node that
    does not take a page gets a hint for its stations instead: its streams read the
    log."""
    after = {pk: (code, first - 1) for pk, (code, first, _) in ranges.items()}
    through = {pk: last for pk, (_, _, last) in ranges.items()}
    pks = {code: pk for pk, (code, _, _) in ranges.items()}
    while after:
        page = log_entries_after(after, PAGE, through)
        if not page or not still():
            return
        failed = publish_to_pushpin([(i.station_code, i.kind, i.data, i.seq) for i in page])
        if failed and hint_streams_of({i.station_code for i in page}, urls=failed):
            logger.error(
                "Pushpin relay: nodes %s took neither entries nor hints: their streams "
                "on these stations wait for the stations' next entries",
                failed,
            )
        if len(page) < PAGE:
            return
        for item in page:  # each station's entries in a page are a run from its position
            after[pks[item.station_code]] = (item.station_code, item.seq)
        after = {pk: position for pk, position in after.items() if position[1] < through[pk]}


# This server process's relay: the only one on SQLite; on PostgreSQL a standby.
relay = Relay(standby_seconds=settings.CGM_RELAY_STANDBY_SECONDS)
