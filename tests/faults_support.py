"""The fault suite's machinery (tests/test_faults.py): one load, one fault, one verdict.

`run_load` opens N resume-checking subscribers (bench/loadgen.py's raw-socket SSE
reader, which counts every notification id it sees and every duplicate), then posts
events at a fixed rate, injects a fault in the middle, lets everything drain and
returns an `Outcome`: what every subscriber should have received (exactly the ids
whose post was answered 201/200 for its station), what it did receive, and every
answer a post or a stream open got.

The clients behave as the API tells them to:

- a subscriber whose stream ends, breaks, or whose open is answered 503, opens it
  again with `Last-Event-ID: <the last id it saw>` after a short pause (EventSource's
  `retry:`; after a 503, the `Retry-After`);
- a poster whose post is answered 503 (or never answered: the connection broke) posts
  the same event, same id, again: "a repeated id is stored once".

Also here: several workers on one socket (scripts/run_multi.py), a private PostgreSQL
cluster a test may stop and start, raw sockets that never read, oversize uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.loadgen import RawPoster, Stats, Subscriber, _SSEProtocol
from tests.server import ROOT, PreparedDatabase, free_port
from tests.services import child_pids, unavailable

STATIONS = [f"ST{n:03d}" for n in range(1, 11)]
OK = (200, 201)


# --- a subscriber that resumes, as EventSource does -----------------------------------


@dataclass(eq=False)
class ResumingSubscriber(Subscriber):
    """bench/loadgen.py's Subscriber (received ids, duplicates, last_id), plus what each
    attempt to open its stream was answered, and the resume loop's state."""

    port: int = 0
    opens: int = 0  # streams that reached their stream-open frame
    attempts: int = 0
    open_statuses: Counter = field(default_factory=Counter)  # non-200 answers to an open
    missing_retry_after: int = 0  # 503s on an open without Retry-After
    connect_errors: int = 0  # refused, reset or timed out before any answer
    open_timeouts: int = 0
    ends: int = 0  # streams that ended or broke after they had opened
    stopping: bool = False
    pause_next: float | None = None
    # (began, answered, 200 / refusal status / "broken" / "timeout") of every attempt
    history: list = field(default_factory=list)
    first_open: asyncio.Event | None = None

    def blip(self, pause: float) -> None:
        """The client's own network blip: drop the stream, come back after `pause`."""
        self.pause_next = pause
        if self.transport is not None:
            self.transport.close()


class _ResumingProtocol(_SSEProtocol):
    """loadgen's parser, which also notices the end of a chunked response (the server
    ended the stream but kept the connection) and keeps the head of a refusal."""

    def __init__(self, sub: ResumingSubscriber, stats: Stats, opened, done):
        super().__init__(sub, stats, opened)
        self.done = done
        self.status: int | None = None
        self.retry_after: str | None = None

    def _dechunk(self):
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.raw[:line_end].split(b";")[0] or b"0", 16)
            if size == 0:
                # The last chunk: the server ended this response. EventSource treats the
                # end like a broken connection and reconnects.
                self.raw = b""
                self.sub.transport.close()
                return
            if len(self.raw) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self.text += self.raw[start : start + size]
            self.raw = self.raw[start + size + 2 :]

    def _fail(self, reason):
        head = self.head.partition(b"\r\n\r\n")[0].decode("latin-1")
        try:
            self.status = int(head.split(" ", 2)[1])
        except (IndexError, ValueError):
            self.status = -1
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "retry-after":
                self.retry_after = value.strip()
        super()._fail(reason)

    def connection_lost(self, exc):
        super().connection_lost(exc)
        if not self.done.done():
            self.done.set_result(exc)


async def _resume_loop(sub: ResumingSubscriber, stats: Stats, open_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    while not sub.stopping:
        pause = 0.25 + random.random() * 0.25  # noqa: S311 (a browser-like retry: jitter)
        opened = loop.create_future()
        done = loop.create_future()
        protocol = None
        sub.attempts += 1
        began = time.monotonic()

        def factory(opened=opened, done=done):
            nonlocal protocol
            protocol = _ResumingProtocol(sub, stats, opened, done)
            return protocol

        try:
            await asyncio.wait_for(loop.create_connection(factory, "127.0.0.1", sub.port), 10)
        except (OSError, TimeoutError):
            sub.connect_errors += 1
            sub.history.append((began, time.monotonic(), "broken"))
            await asyncio.sleep(pause)
            continue
        try:
            ok = await asyncio.wait_for(asyncio.shield(opened), open_timeout)
        except TimeoutError:
            sub.open_timeouts += 1
            sub.history.append((began, time.monotonic(), "timeout"))
            sub.transport.close()
            await done
            continue
        if ok:
            sub.history.append((began, time.monotonic(), 200))
            sub.opens += 1
            if sub.first_open is not None:
                sub.first_open.set()
            await done
            if sub.stopping:
                return
            sub.ends += 1
        else:
            await done
            status = protocol.status
            sub.history.append((began, time.monotonic(), "broken" if status is None else status))
            if status is None:
                sub.connect_errors += 1  # closed or reset before an answer
            else:
                sub.open_statuses[status] += 1
                if status == 503:
                    if protocol.retry_after is None:
                        sub.missing_retry_after += 1
                    else:
                        pause = min(float(protocol.retry_after), 5.0)
        if sub.pause_next is not None:
            pause, sub.pause_next = sub.pause_next, None
        await asyncio.sleep(pause)


# --- posters that retry with the same id ---------------------------------------------


class AnsweringPoster(RawPoster):
    """loadgen's keep-alive poster, keeping the answer's headers (Retry-After)."""

    async def exchange(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            (
                f"POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.headers}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            answer = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            answer = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                answer += (await self.reader.readexactly(size + 2))[:size]
                if size == 0:
                    break
        else:
            answer = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.drop()
        return status, headers, answer

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Ledger:
    """Every post's fate, by event id."""

    accepted: dict[str, set] = field(default_factory=dict)  # station -> ids answered 201/200
    statuses: Counter = field(default_factory=Counter)  # every answer, retries included
    missing_retry_after: int = 0
    bad: list = field(default_factory=list)  # (status, body) of answers other than 2xx/503
    transport_errors: int = 0
    unanswered: set = field(default_factory=set)  # gave up: never answered 201/200
    in_doubt: set = field(default_factory=set)  # sent, never answered (may be stored)
    answered_503_in: list = field(default_factory=list)  # seconds until each 503 came
    retried: int = 0
    # (sent, answered, status or exception name) of every attempt, monotonic seconds
    attempts: list = field(default_factory=list)

    def accepted_ids(self) -> set:
        return set().union(*self.accepted.values()) if self.accepted else set()


class _PosterPool:
    """Keep-alive connections to one port; a new one when all are busy (a fleet of
    devices, each waiting for its own answer), at most `cap`."""

    def __init__(self, port: int, headers: dict, cap: int = 300):
        self.port, self.headers, self.cap = port, headers, cap
        self.idle: list[AnsweringPoster] = []
        self.count = 0
        self.freed = asyncio.Condition()

    async def get(self) -> AnsweringPoster:
        async with self.freed:
            while not self.idle and self.count >= self.cap:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.count += 1
            return AnsweringPoster(self.port, self.headers)

    async def put(self, poster: AnsweringPoster) -> None:
        async with self.freed:
            self.idle.append(poster)
            self.freed.notify()

    def close(self) -> None:
        for poster in self.idle:
            poster.drop()


def make_load_event(event_id: str, station: str, message: str) -> dict:
    return {
        "id": event_id,
        "stationId": station,
        "boxId": f"{station}-B1",
        "connectorId": "1",
        "faultType": "SYSTEM_ERROR",
        "action": "SYSTEM_DATA_CHANGED",
        "message": message,
    }


async def post_load(
    ports: list[int],
    key: str,
    stats: Stats,
    ledger: Ledger,
    *,
    rate: float,
    duration: float,
    stations: list[str],
    prefix: str,
    message: str,
    give_up_after: float,
) -> None:
    """`rate` events/s for `duration` s, one event per post, spread over `ports`; each
    event posted until it is answered 201/200 (or `give_up_after` s past the end)."""
    headers = {"Authorization": f"Bearer {key}"}
    pools = [_PosterPool(port, headers) for port in ports]
    start = time.monotonic()
    give_up_at = start + duration + give_up_after

    async def one(n: int) -> None:
        station = stations[n % len(stations)]
        event_id = f"{prefix}-{n}"
        body = json.dumps(make_load_event(event_id, station, message)).encode()
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        stats.post_started[event_id] = time.monotonic()
        # With several ports (workers): half the stations get their events through
        # every port in turn, so a stream also learns of a missed event from the next
        # one; the other half always through one port, so the streams on the other
        # workers hear of them only through the fan-out between workers.
        index = n % len(stations)
        target = (n // len(stations) if index % 2 == 0 else index // 2) % len(pools)
        first = True
        while True:
            if not first:
                ledger.retried += 1
            first = False
            if time.monotonic() > give_up_at:
                ledger.unanswered.add(event_id)
                return
            pool = pools[target]
            poster = await pool.get()
            sent = time.monotonic()
            try:
                status, answer_headers, answer = await asyncio.wait_for(poster.exchange(body), 30)
            except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                # Connection refused, reset, or closed without an answer: the event may or
                # may not be stored. Post it again, on a fresh connection.
                poster.drop()
                await pool.put(poster)
                ledger.attempts.append((sent, time.monotonic(), "broken"))
                ledger.transport_errors += 1
                ledger.in_doubt.add(event_id)
                target = (target + 1) % len(pools)
                await asyncio.sleep(0.3)
                continue
            await pool.put(poster)
            ledger.attempts.append((sent, time.monotonic(), status))
            ledger.statuses[status] += 1
            if status in OK:
                ledger.accepted.setdefault(station, set()).add(event_id)
                ledger.in_doubt.discard(event_id)
                return
            if status in (503, 429):
                # "Retry later", as documented: the database is away (503), or this key's
                # rate is used up (429: every post that got a 503 during an outage comes
                # back at once after its Retry-After, and together they pass the key's
                # rate). A client waits as told, plus a little jitter so that the retries
                # do not all land in the same second again.
                if status == 503:
                    ledger.answered_503_in.append(time.monotonic() - sent)
                retry_after = answer_headers.get("retry-after")
                if retry_after is None:
                    ledger.missing_retry_after += 1
                jitter = random.random() * 0.5  # noqa: S311
                await asyncio.sleep(min(float(retry_after or 1), 5.0) + jitter)
                continue
            ledger.bad.append((status, answer[:300].decode(errors="replace")))
            if status >= 500:
                await asyncio.sleep(1.0)
                continue
            ledger.unanswered.add(event_id)  # a 4xx: posting it again would not help
            return

    try:
        await asyncio.gather(*(one(n) for n in range(int(rate * duration))))
    finally:
        for pool in pools:
            pool.close()


# --- one scenario: load, fault, drain, verdict -----------------------------------------


@dataclass
class Load:
    subscriber_ports: list[int]
    poster_ports: list[int]
    ingest_key: str
    subscribe_key: str
    subscribers: int = 100
    stations: list[str] = field(default_factory=lambda: list(STATIONS))
    rate: float = 50.0
    duration: float = 15.0
    fault_at: float = 5.0
    message: str = "fault suite"
    drain: float = 20.0  # at most, after the posts are all answered and the fault is over
    open_timeout: float = 25.0


@dataclass
class LoadRun:
    """What a fault (and a monitor) can see and touch while the load runs."""

    load: Load
    subscribers: list[ResumingSubscriber]
    stats: Stats
    ledger: Ledger
    prefix: str
    started: float = 0.0
    marks: dict = field(default_factory=dict)  # name -> seconds since the load started
    latency_marks: list = field(default_factory=list)  # (seconds, len(stats.latencies))

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.started, 2)

    def latencies_between(self, start: float, end: float) -> list[float]:
        """Delivery latencies (post sent to notification read) seen in [start, end) s."""
        first = next((n for t, n in self.latency_marks if t >= start), None)
        last = next((n for t, n in self.latency_marks if t >= end), None)
        if first is None:
            return []
        return self.stats.latencies[first : last if last is not None else None]


@dataclass
class Outcome:
    run: LoadRun
    expected_deliveries: int
    delivered: int
    lost: dict  # subscriber index -> ids it never got
    duplicated: int
    unexplained: dict  # subscriber index -> ids it got that were never accepted nor in doubt
    drained_in: float
    wall: float

    @property
    def ledger(self) -> Ledger:
        return self.run.ledger

    @property
    def subscribers(self) -> list[ResumingSubscriber]:
        return self.run.subscribers

    def open_statuses(self) -> Counter:
        total = Counter()
        for sub in self.subscribers:
            total.update(sub.open_statuses)
        return total

    def reconnects(self) -> int:
        return sum(sub.attempts - 1 for sub in self.subscribers)

    def p50_ms(self) -> float:
        latencies = self.run.stats.latencies
        return round(statistics.median(latencies) * 1000, 1) if latencies else float("nan")

    def summary(self, name: str) -> str:
        opens = self.open_statuses()
        lost = sum(len(ids) for ids in self.lost.values())
        other_5xx = sum(
            n for s, n in (self.ledger.statuses + opens).items() if s >= 500 and s != 503
        )
        return (
            f"{name}: {len(self.subscribers)} subscribers, "
            f"{len(self.ledger.accepted_ids())} events accepted, "
            f"{self.delivered}/{self.expected_deliveries} delivered, {lost} lost, "
            f"{self.duplicated} duplicated, "
            f"{self.ledger.statuses[503]} 503s on posts + {opens[503]} on stream opens, "
            f"{other_5xx} other 5xx, {self.reconnects()} reconnects, "
            f"{self.ledger.transport_errors} broken posts, {self.ledger.retried} post retries, "
            f"p50 {self.p50_ms()} ms, drained in {self.drained_in:.1f} s, "
            f"marks {self.run.marks}"
        )

    def problems(self) -> list[str]:
        """Everything that breaks the contract: loss, repeats, undocumented answers."""
        found = []
        ledger = self.ledger
        for index, ids in sorted(self.lost.items())[:5]:
            sub = self.subscribers[index]
            found.append(
                f"subscriber {index} ({sub.station} on :{sub.port}) lost {len(ids)} events, "
                f"e.g. {sorted(ids)[:5]}; last cursor {sub.last_id}"
            )
        if len(self.lost) > 5:
            found.append(f"... {len(self.lost)} subscribers lost events in all")
        if self.duplicated:
            subs = [i for i, s in enumerate(self.subscribers) if s.duplicates]
            found.append(f"{self.duplicated} duplicated deliveries (subscribers {subs[:10]})")
        for index, ids in sorted(self.unexplained.items())[:3]:
            found.append(f"subscriber {index} got events never accepted: {sorted(ids)[:5]}")
        # 503 and 429 are documented "retry later" answers (the posters do retry them,
        # above); a missing Retry-After on them is checked below.
        other = {s: n for s, n in ledger.statuses.items() if s not in (*OK, 503, 429)}
        if other:
            found.append(f"posts answered {other}; first bodies: {ledger.bad[:3]}")
        if ledger.missing_retry_after:
            found.append(f"{ledger.missing_retry_after} post 503s or 429s without Retry-After")
        if ledger.unanswered:
            found.append(
                f"{len(ledger.unanswered)} events never accepted, "
                f"e.g. {sorted(ledger.unanswered)[:5]}"
            )
        opens = self.open_statuses()
        other_opens = {s: n for s, n in opens.items() if s != 503}
        if other_opens:
            found.append(f"stream opens answered {other_opens}")
        missing = sum(sub.missing_retry_after for sub in self.subscribers)
        if missing:
            found.append(f"{missing} stream-open 503s without Retry-After")
        timeouts = sum(sub.open_timeouts for sub in self.subscribers)
        if timeouts:
            found.append(f"{timeouts} stream opens got no stream-open frame within the timeout")
        return found


async def run_load(load: Load, fault=None, monitor=None) -> Outcome:
    """Open the subscribers, post at `load.rate` for `load.duration` s, run
    `fault(run)` at `load.fault_at` s, drain, and return the outcome. `monitor(run)`
    runs from the start of the load until the drain ends (then it is cancelled)."""
    began = time.monotonic()
    stats = Stats()
    prefix = f"flt-{uuid.uuid4().hex[:8]}"
    subscribers = []
    for n in range(load.subscribers):
        station = load.stations[n % len(load.stations)]
        subscribers.append(
            ResumingSubscriber(
                path=f"/api/sse/stations/{station}/",
                station=station,
                headers={"Authorization": f"Bearer {load.subscribe_key}"},
                # Each station's subscribers on every port.
                port=load.subscriber_ports[(n // len(load.stations)) % len(load.subscriber_ports)],
                first_open=asyncio.Event(),
            )
        )
    run = LoadRun(load, subscribers, stats, Ledger(), prefix)
    readers = [
        asyncio.ensure_future(_resume_loop(sub, stats, load.open_timeout)) for sub in subscribers
    ]
    side_tasks: list[asyncio.Future] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(sub.first_open.wait() for sub in subscribers)), 60)
        await asyncio.sleep(0.5)  # every worker's Redis subscriber in place
        run.started = time.monotonic()

        async def latency_marks():
            while True:
                run.latency_marks.append((time.monotonic() - run.started, len(stats.latencies)))
                await asyncio.sleep(0.25)

        async def fault_at():
            await asyncio.sleep(load.fault_at)
            run.mark("fault")
            await fault(run)
            run.mark("fault over")

        side_tasks.append(asyncio.ensure_future(latency_marks()))
        if monitor is not None:
            side_tasks.append(asyncio.ensure_future(monitor(run)))
        posting = asyncio.ensure_future(
            post_load(
                load.poster_ports,
                load.ingest_key,
                stats,
                run.ledger,
                rate=load.rate,
                duration=load.duration,
                stations=load.stations,
                prefix=prefix,
                message=load.message,
                give_up_after=30,
            )
        )
        faulting = asyncio.ensure_future(fault_at()) if fault is not None else None
        await posting
        run.mark("posts answered")
        if faulting is not None:
            await faulting

        drain_start = time.monotonic()
        accepted = run.ledger.accepted
        while time.monotonic() - drain_start < load.drain:
            if all(accepted.get(s.station, set()) <= s.received for s in subscribers):
                break
            await asyncio.sleep(0.2)
        drained_in = time.monotonic() - drain_start
        await asyncio.sleep(1.0)  # anything delivered twice arrives now
        run.mark("drained")
    finally:
        for task in side_tasks:
            task.cancel()
        for sub in subscribers:
            sub.stopping = True
            if sub.transport is not None:
                sub.transport.close()
        await asyncio.sleep(0.2)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, *side_tasks, return_exceptions=True)

    ledger = run.ledger
    lost, unexplained = {}, {}
    expected_total = delivered = 0
    for index, sub in enumerate(subscribers):
        expected = accepted.get(sub.station, set())
        mine = {i for i in sub.received if i.startswith(prefix + "-")}
        expected_total += len(expected)
        delivered += len(mine & expected)
        if expected - mine:
            lost[index] = expected - mine
        odd = mine - expected - ledger.in_doubt - ledger.unanswered
        if odd:
            unexplained[index] = odd
    return Outcome(
        run=run,
        expected_deliveries=expected_total,
        delivered=delivered,
        lost=lost,
        duplicated=sum(sub.duplicates for sub in subscribers),
        unexplained=unexplained,
        drained_in=drained_in,
        wall=time.monotonic() - began,
    )


# --- healthy afterwards -----------------------------------------------------------------


def health_problems(
    stream_base: str, post_base: str, ingest_key: str, subscribe_key: str, within: float = 2.0
) -> list[str]:
    """A fresh stream opens (200, stream-open) and a fresh post is answered 201, each
    within `within` s, and the post reaches the stream within `within` s."""
    problems = []
    event = make_load_event(f"health-{uuid.uuid4().hex[:10]}", "ST001", "health check")
    timeout = httpx.Timeout(within)
    try:
        with httpx.Client(timeout=timeout) as client:
            began = time.monotonic()
            with client.stream(
                "GET",
                f"{stream_base}/api/sse/stations/ST001/",
                headers={"Authorization": f"Bearer {subscribe_key}"},
            ) as response:
                if response.status_code != 200:
                    return [f"fresh stream open on {stream_base}: {response.status_code}"]
                lines = response.iter_lines()
                for line in lines:
                    if line == "event: stream-open":
                        break
                opened_in = time.monotonic() - began
                if opened_in > within:
                    problems.append(f"fresh stream on {stream_base} opened in {opened_in:.2f} s")
                began = time.monotonic()
                posted = httpx.post(
                    f"{post_base}/api/event",
                    json=event,
                    headers={"Authorization": f"Bearer {ingest_key}"},
                    timeout=timeout,
                )
                posted_in = time.monotonic() - began
                if posted.status_code != 201 or posted_in > within:
                    problems.append(
                        f"fresh post on {post_base}: {posted.status_code} in {posted_in:.2f} s"
                    )
                for line in lines:
                    if line.startswith("data: ") and event["id"] in line:
                        break
                delivered_in = time.monotonic() - began
                if delivered_in > within:
                    problems.append(
                        f"fresh event {post_base} -> {stream_base}: {delivered_in:.2f} s"
                    )
    except httpx.HTTPError as exc:
        problems.append(f"health check {post_base} -> {stream_base}: {exc!r}")
    return problems


ACCESS_LINE = re.compile(r'"(?:GET|POST|HEAD|PUT|PATCH|DELETE|OPTIONS) ([^" ]*)[^"]*" (\d{3}) ')


def logged_5xx(log: str) -> Counter:
    """5xx answers in Daphne's access log, other than 503, by (status, path)."""
    found = Counter()
    for path, status in ACCESS_LINE.findall(log):
        if status.startswith("5") and status != "503":
            found[(int(status), path.split("?")[0])] += 1
    return found


# --- processes: several workers on one socket ----------------------------------------


def server_env(database_url: str, env: dict) -> dict:
    """What tests/server.py's DaphneServer gives its process."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cgm.settings",
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": "e2e-test-secret",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CGM_ALLOW_PLAIN_HTTP": "1",
        "PYTHONUNBUFFERED": "1",
        **env,
    }


class MultiWorkers:
    """scripts/run_multi.py: `workers` Daphne processes on one port (SO_REUSEPORT), a
    worker that dies started again on its predecessor's socket."""

    def __init__(self, workdir: Path, database: PreparedDatabase, env: dict, workers: int = 2):
        self.workers = workers
        self.port = free_port()
        self.log_path = workdir / f"run_multi-{self.port}.log"
        self.env = server_env(database.url, env)
        self.ingest_key, self.subscribe_key = database.ingest_key, database.subscribe_key
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def listening(self) -> int:
        return self.log().count("Listening on")

    def worker_pids(self) -> list[int]:
        return child_pids(self.process.pid)

    def wait_listening(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.listening() < count:
            if self.process.poll() is not None:
                raise RuntimeError(f"run_multi exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"run_multi: {count} workers not listening:\n{self.log()}")
            time.sleep(0.1)

    def start(self) -> MultiWorkers:
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "scripts/run_multi.py",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_listening(self.workers)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        workers = self.worker_pids()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pid in workers:  # a worker the launcher did not stop in time
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def served_connections(pid: int, port: int) -> int:
    """Established TCP connections on local `port` whose socket `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local_port = int(parts[1].split(":")[1], 16)
        if local_port == port and parts[3] == "01" and parts[9] in inodes:
            count += 1
    return count


def server_side_queue(server_port: int, client_port: int) -> int | None:
    """Bytes the server's kernel holds unsent for the established connection from
    `client_port`, or None once the server holds no such connection."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote = parts[1], parts[2]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
            and parts[3] == "01"
        ):
            return int(parts[4].split(":")[0], 16)
    return None


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


# --- a private PostgreSQL cluster, to stop and start ----------------------------------


def _pg_bin() -> Path | None:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


class PrivatePostgres:
    """initdb in a temporary directory, served on a free port with trust auth. As root
    (initdb refuses root) the cluster is the `postgres` user's, run with runuser."""

    def __init__(self):
        self.bin = _pg_bin()
        if self.bin is None or not (self.bin / "pg_ctl").exists():
            unavailable("PostgreSQL's initdb/pg_ctl are not installed")
        self.prefix: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="cgm-faults-pg-"))
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                unavailable("running as root without runuser: cannot run initdb")
            try:
                shutil.chown(self.dir, user="postgres", group="postgres")
            except (LookupError, OSError) as exc:
                unavailable(f"no postgres user to own a private cluster ({exc})")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.dir
        )

    def init(self) -> PrivatePostgres:
        result = self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if result.returncode != 0:
            unavailable(f"initdb failed here: {result.stderr.strip()[-500:]}")
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=60"
        )
        result = self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "30",
            "-o",
            options,
            "start",
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{self.log()}")

    def stop(self, mode: str = "fast") -> None:
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {result.stderr}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def psql(self, database: str, *args: str, stdin=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                *args,
            ],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def copy_database(self, host: str, port: int, user: str, source: str, target: str) -> None:
        """`source` from another server (pg_dump), loaded here as `target`."""
        created = self.psql("postgres", "-c", f'CREATE DATABASE "{target}"')
        if created.returncode != 0:
            raise RuntimeError(created.stderr)
        dump = subprocess.Popen(
            [
                str(self.bin / "pg_dump"),
                "-h",
                host,
                "-p",
                str(port),
                "-U",
                user,
                "--no-owner",
                "--no-privileges",
                source,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        loaded = self.psql(target, stdin=dump.stdout)
        dump.stdout.close()
        dump.wait(60)
        if dump.returncode != 0 or loaded.returncode != 0:
            raise RuntimeError(f"copying {source}: {dump.stderr.read()!r} {loaded.stderr}")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# --- clients that misbehave -----------------------------------------------------------


class StalledReader:
    """A stream opened over a socket with a small receive buffer and never read."""

    def __init__(self, port: int, path: str, key: str, cursor: str | None = None):
        self.server_port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.client_port = self.sock.getsockname()[1]
        resume = f"Last-Event-ID: {cursor}\r\n" if cursor else ""
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                f"Authorization: Bearer {key}\r\n{resume}\r\n"
            ).encode()
        )

    def dropped_by_server(self) -> bool:
        return self.queued() is None

    def queued(self) -> int | None:
        """What the server's kernel holds unsent for this reader (None: disconnected)."""
        return server_side_queue(self.server_port, self.client_port)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@dataclass
class UploadResult:
    kind: str
    status: int | None = None
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    answered_in: float | None = None  # headers sent -> status line read
    closed_in: float | None = None  # headers sent -> EOF or reset
    sent_bytes: int = 0
    error: str | None = None


def oversize_upload(port: int, chunked: bool, give_up: float = 10.0) -> UploadResult:
    """POST /api/event with no credentials, declaring 2 GB (or chunked, endless), and
    keep streaming the body while reading the answer, until the server closes."""
    result = UploadResult("chunked endless" if chunked else "Content-Length 2 GB")
    sock = socket.create_connection(("127.0.0.1", port), timeout=give_up)
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 2147483648"
    sock.sendall(
        (
            f"POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n"
        ).encode()
    )
    began = time.monotonic()
    stop = threading.Event()
    piece = b'[{"id": "' + b"x" * 65000 + b'"}]'
    chunk = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece

    def send_forever():
        while not stop.is_set() and time.monotonic() - began < give_up:
            try:
                sock.sendall(chunk)
            except OSError:
                return
            result.sent_bytes += len(chunk)

    sender = threading.Thread(target=send_forever, daemon=True)
    sender.start()
    received = b""
    try:
        while time.monotonic() - began < give_up:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                result.closed_in = time.monotonic() - began
                break
            if not received:
                result.answered_in = time.monotonic() - began
            received += data
        else:
            result.error = f"still open after {give_up} s"
    except OSError as exc:  # reset: closed too
        result.closed_in = time.monotonic() - began
        result.error = f"{type(exc).__name__} after {len(received)} bytes"
    finally:
        stop.set()
        sender.join(5)
        sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    if head:
        lines = head.decode("latin-1").split("\r\n")
        with contextlib.suppress(IndexError, ValueError):
            result.status = int(lines[0].split(" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            result.headers[name.strip().lower()] = value.strip()
        result.body = body
    return result


def open_streams(port: int, key: str, count: int, within: float = 2.0):
    """`count` fresh streams on `port`, each of which must reach its stream-open frame
    within `within` s. Returns (sockets, problems); the caller closes the sockets."""
    socks, problems = [], []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=within)
        sock.sendall(
            (
                "GET /api/sse/stations/ST001/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {key}\r\n\r\n"
            ).encode()
        )
        socks.append(sock)
    deadline = time.monotonic() + within
    for sock in socks:
        received = b""
        while b"stream-open" not in received:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except OSError as exc:
                problems.append(f"fresh stream: {exc!r} after {received[:80]!r}")
                break
            if not data:
                problems.append(f"fresh stream closed: {received[:200]!r}")
                break
            received += data
    return socks, problems
