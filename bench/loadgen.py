"""Load generator: many SSE subscribers and paced posters over raw asyncio sockets.

Raw sockets, not an HTTP library, so that one Python process can hold 10,000 streams
and post thousands of events a second while leaving the CPU to the server under test.
The SSE parsing is still real: frames are de-chunked and split on blank lines, and an
event counts when its `data:` line has been read and its message id extracted.
"""

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Subscriber:
    path: str
    station: str
    headers: dict
    last_id: str | None = None
    opened: bool = False
    failed: str | None = None
    received: set = field(default_factory=set)
    duplicates: int = 0
    reconnects: int = 0
    server_ended: int = 0  # open streams of this subscriber that the server ended
    transport: asyncio.Transport | None = None
    ever_opened: bool = False  # owed every event of its station from then on
    # Moves on each time the bench closes the stream or opens it anew: a connection or
    # a reopen of an older generation is stale, and closes (or gives up) by itself.
    generation: int = 0


def close_stream(sub: Subscriber) -> None:
    """The bench closes this stream (it is not reopened unless the bench does)."""
    sub.generation += 1
    sub.opened = False
    if sub.transport is not None:
        sub.transport.close()


def close_all(subs: list[Subscriber], stats: "Stats") -> None:
    """The end of a scenario: every stream closed, and no reopen left pending."""
    for sub in subs:
        close_stream(sub)
    for task in list(stats.reopening):
        task.cancel()


class _SSEProtocol(asyncio.Protocol):
    """HTTP/1.1 response head, then chunked (or raw) SSE frames."""

    def __init__(
        self,
        sub: Subscriber,
        stats: "Stats",
        opened: asyncio.Future,
        port: int | None = None,
        generation: int | None = None,
    ):
        self.sub = sub
        self.stats = stats
        self.opened = opened
        self.port = port  # where to reopen a stream the server ends (None: not reopened)
        self.generation = generation  # the subscriber's when this open began
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.raw = b""  # undecoded chunked bytes
        self.text = b""  # decoded SSE bytes

    def connection_made(self, transport):
        self.transport = transport
        if self.generation is not None and self.generation != self.sub.generation:
            transport.close()  # the bench closed or reopened the stream meanwhile
            return
        self.sub.transport = transport
        lines = [f"GET {self.sub.path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
        headers = dict(self.sub.headers)
        if self.sub.last_id:
            headers["Last-Event-ID"] = self.sub.last_id
        lines += [f"{k}: {v}" for k, v in headers.items()]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data):
        if not self.in_body:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, rest = self.head.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0]
            if b" 200 " not in status + b" ":
                self._fail(status.decode(errors="replace"))
                return
            self.chunked = b"transfer-encoding: chunked" in head.lower()
            self.in_body = True
            data = rest
        if self.chunked:
            self.raw += data
            self._dechunk()
        else:
            self.text += data
        self._frames()

    def _dechunk(self):
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.raw[:line_end].split(b";")[0] or b"0", 16)
            if size == 0:
                # The last chunk: the server ended the stream (the connection may stay
                # open). EventSource treats it like a broken connection: see below.
                self.raw = b""
                self.transport.close()
                return
            if len(self.raw) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self.text += self.raw[start : start + size]
            self.raw = self.raw[start + size + 2 :]

    def _frames(self):
        now = time.monotonic()
        while True:
            end = self.text.find(b"\n\n")
            if end < 0:
                return
            frame = self.text[:end]
            self.text = self.text[end + 2 :]
            event = b"message"
            event_id = None
            data = b""
            for line in frame.split(b"\n"):
                if line.startswith(b"event: "):
                    event = line[7:]
                elif line.startswith(b"id: "):
                    event_id = line[4:]
                elif line.startswith(b"data: "):
                    data = line[6:]
            if event_id is not None:
                self.sub.last_id = event_id.decode()
            if event == b"stream-open" and not self.opened.done():
                self.sub.opened = True
                self.sub.ever_opened = True
                self.opened.set_result(True)
            elif event == b"notification":
                # The data object starts with the sender's id: no full JSON parse needed.
                message_id = data[8 : data.index(b'"', 8)].decode()
                if message_id in self.sub.received:
                    self.sub.duplicates += 1
                else:
                    self.sub.received.add(message_id)
                    started = self.stats.post_started.get(message_id)
                    if started is not None:
                        self.stats.latencies.append(now - started)
                        self.stats.latency_posted.append(
                            self.stats.post_scheduled.get(message_id, started)
                        )

    def _fail(self, reason):
        self.sub.failed = reason
        if not self.opened.done():
            self.opened.set_result(False)
        self.sub.transport.close()

    def connection_lost(self, exc):
        if not self.opened.done():
            self.sub.failed = self.sub.failed or f"closed before stream-open ({exc})"
            self.opened.set_result(False)
        elif (
            self.port is not None
            and not self.opened.cancelled()
            and self.opened.result()
            and self.generation == self.sub.generation
            and self.sub.transport is self.transport
        ):
            # The server ended a stream that was open (not the bench: that moves the
            # generation on): a client reconnects from its last id, as EventSource and
            # the console do, and the events meanwhile come with the replay. Counted,
            # so a server that ends streams shows in the result line.
            self.sub.opened = False
            self.sub.server_ended += 1
            self.stats.server_closes += 1
            task = asyncio.get_running_loop().create_task(
                _reopen(self.port, self.sub, self.stats, self.generation)
            )
            self.stats.reopening.add(task)
            task.add_done_callback(self.stats.reopening.discard)


@dataclass
class Stats:
    post_started: dict = field(default_factory=dict)
    latencies: list = field(default_factory=list)
    # When each latency's event was due to be posted (its place in the paced schedule,
    # before any wait for a free client connection), and when the schedule began.
    latency_posted: list = field(default_factory=list)
    post_scheduled: dict = field(default_factory=dict)
    posting_started: float | None = None
    ingest: list = field(default_factory=list)
    statuses: dict = field(default_factory=dict)
    offered: int = 0
    accepted: int = 0
    open_retries: int = 0
    retry_reasons: Counter = field(default_factory=Counter)  # why opens were retried
    errors: dict = field(default_factory=dict)  # status -> the first error body seen
    server_closes: int = 0  # open streams the server ended (each reopened)
    reopening: set = field(default_factory=set)  # their reopen tasks, until open


# The console's reconnect delays (static/console/stream.js BACKOFF_MS), in seconds: it
# then keeps trying every 10 s for as long as the page is open.
BACKOFF = (1.0, 2.0, 4.0, 8.0, 10.0)
GIVE_UP_AFTER = 180.0  # the bench's own limit: a stream still not open then has failed


async def open_subscriber(
    port: int, sub: Subscriber, stats: Stats, timeout: float = 30, generation: int | None = None
) -> bool:
    """Open the stream as the console does: an open that fails with a 5xx or 429 answer,
    or a connection that drops before stream-open, is tried again after the console's
    backoff, from the last id seen, and again every 10 s after that; a 4xx (refused) is
    not. Each retry is counted in stats.open_retries; False when still not open after
    GIVE_UP_AFTER seconds. A reopen passes the generation it continues; any other call
    is the bench's own open, a new generation. Either gives up once the bench has closed
    or opened the stream since."""
    if generation is None:
        sub.generation += 1
        generation = sub.generation
    give_up = time.monotonic() + GIVE_UP_AFTER
    attempt = 0
    while True:
        if sub.generation != generation:
            return False
        if await _open_once(port, sub, stats, timeout, generation):
            return True
        status = sub.failed.split(" ")[1] if sub.failed.startswith("HTTP/") else ""
        if status.startswith("4") and status != "429":
            return False
        delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
        attempt += 1
        if time.monotonic() + delay > give_up:
            return False
        stats.open_retries += 1
        stats.retry_reasons[sub.failed.split(":")[0][:60]] += 1
        await asyncio.sleep(delay)
        sub.failed = None


async def _reopen(port: int, sub: Subscriber, stats: Stats, generation: int) -> None:
    await asyncio.sleep(BACKOFF[0])
    if sub.generation == generation:
        sub.reconnects += 1
        sub.failed = None
        await open_subscriber(port, sub, stats, generation=generation)


async def _open_once(
    port: int, sub: Subscriber, stats: Stats, timeout: float, generation: int
) -> bool:
    loop = asyncio.get_running_loop()
    opened = loop.create_future()
    try:
        await asyncio.wait_for(
            loop.create_connection(
                lambda: _SSEProtocol(sub, stats, opened, port, generation), "127.0.0.1", port
            ),
            timeout,
        )
        return await asyncio.wait_for(opened, timeout)
    except (OSError, TimeoutError) as exc:
        sub.failed = sub.failed or f"{type(exc).__name__}: {exc}"
        if sub.transport is not None:
            # Given up on: a stream that opens late must not run beside the retry.
            sub.transport.close()
        return False


async def open_all(port: int, subs: list[Subscriber], stats: Stats, parallel: int = 400) -> int:
    semaphore = asyncio.Semaphore(parallel)

    async def one(sub):
        async with semaphore:
            return await open_subscriber(port, sub, stats)

    results = await asyncio.gather(*(one(sub) for sub in subs))
    return sum(1 for ok in results if not ok)


async def reconnect_storm(
    port: int, subs: list[Subscriber], stats: Stats, within: float
) -> tuple[int, float]:
    """Drop every stream, then reconnect them all, spread over `within` seconds, each
    with its last seen id as Last-Event-ID. Returns how many failed to reopen, and the
    seconds from the drop until the last one was back."""
    for sub in subs:
        close_stream(sub)
    await asyncio.sleep(0.2)
    start = time.monotonic()
    failures = 0
    last_back = start

    async def again(index, sub):
        nonlocal failures, last_back
        await asyncio.sleep(start + within * index / len(subs) - time.monotonic())
        sub.reconnects += 1
        sub.failed = None  # only this reconnect's failure counts
        if await open_subscriber(port, sub, stats):
            last_back = max(last_back, time.monotonic())
        else:
            failures += 1

    await asyncio.gather(*(again(i, sub) for i, sub in enumerate(subs)))
    return failures, last_back - start + 0.2


class RawPoster:
    """One keep-alive HTTP/1.1 connection posting JSON bodies."""

    def __init__(self, port: int, headers: dict):
        self.port = port
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader = None
        self.writer = None
        self.last_error = ""

    async def post(self, body: bytes) -> int:
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
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await self.reader.readexactly(length) if length else b""
        if b"connection: close" in head.lower():
            self.writer.close()
            self.writer = None
        if status >= 400:
            self.last_error = body[:300].decode(errors="replace")
        return status

    def close(self):
        if self.writer is not None:
            self.writer.close()


async def _post_and_record(poster, body: bytes, began: float, events: int, stats: Stats):
    try:
        status = await poster.post(body)
    except (OSError, asyncio.IncompleteReadError) as exc:
        status = type(exc).__name__
        poster.writer = None
    stats.ingest.append(time.monotonic() - began)
    stats.statuses[status] = stats.statuses.get(status, 0) + events
    if status not in (200, 201):
        stats.errors.setdefault(str(status), poster.last_error)
    if status in (200, 201):
        stats.accepted += events
    return status


async def post_at_rate(
    port: int,
    headers: dict,
    stats: Stats,
    *,
    rate: float,
    duration: float,
    stations: list[str],
    batch: int,
    prefix: str,
    connections: int = 32,
    sent_per_station: dict | None = None,
) -> None:
    """Offer `rate` events/s for `duration` s, in requests of `batch` events."""
    posters = [RawPoster(port, headers) for _ in range(connections)]
    idle: asyncio.Queue = asyncio.Queue()
    for poster in posters:
        idle.put_nowait(poster)
    requests = int(rate * duration / batch)
    interval = batch / rate
    start = time.monotonic()
    stats.posting_started = start
    tasks = []
    counter = 0

    async def send(events):
        poster = await idle.get()
        body = json.dumps(events).encode() if batch > 1 else json.dumps(events[0]).encode()
        began = time.monotonic()
        for event in events:
            stats.post_started[event["id"]] = began
        status = await _post_and_record(poster, body, began, len(events), stats)
        if sent_per_station is not None and status in (200, 201):
            # Only what the server accepted is owed to subscribers; a refused post
            # shows in `statuses` (and its reason in `errors`), not as lost deliveries.
            for event in events:
                sent_per_station.setdefault(event["stationId"], []).append(event["id"])
        idle.put_nowait(poster)

    for n in range(requests):
        await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
        events = []
        for _ in range(batch):
            station = stations[counter % len(stations)]
            events.append(
                {
                    "id": f"{prefix}-{counter}",
                    "stationId": station,
                    "boxId": f"{station}-B1",
                    "connectorId": "1",
                    "faultType": "SYSTEM_ERROR",
                    "action": "SYSTEM_DATA_CHANGED",
                    "message": "benchmark",
                }
            )
            counter += 1
        for event in events:
            stats.post_scheduled[event["id"]] = start + n * interval
        stats.offered += len(events)
        tasks.append(asyncio.ensure_future(send(events)))
    await asyncio.gather(*tasks)
    for poster in posters:
        poster.close()


async def post_flat_out(
    port: int,
    headers: dict,
    stats: Stats,
    *,
    posters: int,
    duration: float,
    stations: list[str],
    batch: int,
    prefix: str,
) -> float:
    """`posters` concurrent senders, each posting as fast as answers come back."""
    deadline = time.monotonic() + duration
    started = time.monotonic()

    async def run(number):
        poster = RawPoster(port, headers)
        count = 0
        while time.monotonic() < deadline:
            events = []
            for _ in range(batch):
                station = stations[(number + count) % len(stations)]
                events.append(
                    {
                        "id": f"{prefix}-{number}-{count}",
                        "stationId": station,
                        "faultType": "SYSTEM_ERROR",
                        "action": "SYSTEM_DATA_CHANGED",
                    }
                )
                count += 1
            body = json.dumps(events if batch > 1 else events[0]).encode()
            began = time.monotonic()
            stats.offered += batch
            await _post_and_record(poster, body, began, batch, stats)
        poster.close()

    await asyncio.gather(*(run(n) for n in range(posters)))
    return time.monotonic() - started
