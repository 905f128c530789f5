"""A small, strict Server-Sent Events reader over a real HTTP connection (httpx).

It runs in a background thread and parses the wire format itself, so the tests see
exactly what a browser's EventSource would: event, id, data, retry and comments.
"""

import json
import queue
import threading
import time
from dataclasses import dataclass, field

import httpx

LOG_EVENTS = ("notification", "status", "fault")


@dataclass
class SSEEvent:
    event: str = "message"
    id: str | None = None
    data: str = ""
    retry: int | None = None

    def json(self):
        return json.loads(self.data)


@dataclass
class SSEStream:
    url: str
    headers: dict = field(default_factory=dict)
    cookies: dict = field(default_factory=dict)
    events: "queue.Queue[SSEEvent]" = field(default_factory=queue.Queue)
    comments: list = field(default_factory=list)
    status_code: int | None = None
    response_headers: httpx.Headers | None = None
    raw_first_bytes: bytes = b""
    error: BaseException | None = None

    def __post_init__(self):
        self._opened = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._opened.wait(10):
            raise TimeoutError(f"stream {self.url} did not open")
        if self.error:
            raise self.error

    def _run(self):
        try:
            with httpx.Client(timeout=httpx.Timeout(5, read=None), cookies=self.cookies) as client:
                with client.stream("GET", self.url, headers=self.headers) as response:
                    self.status_code = response.status_code
                    self.response_headers = response.headers
                    self._opened.set()
                    self._parse(response)
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            if not self._stop.is_set():
                self.error = exc
            self._opened.set()

    def _parse(self, response):
        current = SSEEvent()
        has_fields = False
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if not self.raw_first_bytes:
                self.raw_first_bytes = line.encode()
            if line == "":
                if has_fields:
                    self.events.put(current)
                current, has_fields = SSEEvent(), False
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            has_fields = True
            if name == "event":
                current.event = value
            elif name == "id":
                current.id = value
            elif name == "data":
                current.data = value if not current.data else current.data + "\n" + value
            elif name == "retry":
                current.retry = int(value)

    def next(self, timeout: float = 5.0) -> SSEEvent:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event on {self.url} within {timeout}s") from None

    def next_of(self, event_type: str, timeout: float = 5.0) -> SSEEvent:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.01, deadline - time.monotonic()))
            if event.event == event_type:
                return event

    def collect(self, event_type: str, count: int, timeout: float = 10.0) -> list[SSEEvent]:
        deadline = time.monotonic() + timeout
        found = []
        while len(found) < count:
            found.append(self.next_of(event_type, max(0.01, deadline - time.monotonic())))
        return found

    def collect_log(self, count: int, timeout: float = 10.0) -> list[SSEEvent]:
        """The next `count` frames of the station log (notification, status, fault), in
        arrival order; stream-open and other control frames are skipped."""
        deadline = time.monotonic() + timeout
        found = []
        while len(found) < count:
            event = self.next(max(0.01, deadline - time.monotonic()))
            if event.event in LOG_EVENTS:
                found.append(event)
        return found

    def collect_log_until(self, done, timeout: float = 10.0) -> list[SSEEvent]:
        """Log frames (as collect_log) until done(frames) is true."""
        deadline = time.monotonic() + timeout
        found: list[SSEEvent] = []
        while not done(found):
            event = self.next(max(0.01, deadline - time.monotonic()))
            if event.event in LOG_EVENTS:
                found.append(event)
        return found

    def quiet(self, event_type: str, seconds: float) -> list[SSEEvent]:
        """Everything of a type that arrives within `seconds` (expected: nothing)."""
        deadline = time.monotonic() + seconds
        found = []
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event.event == event_type:
                found.append(event)
        return found

    def ended(self, timeout: float = 10.0) -> bool:
        """True once the server closed the stream."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self):
        self._stop.set()


def positions_per_station(frames: list[SSEEvent]) -> dict[str, list[int]]:
    """For each station, the log numbers its frames carried, in arrival order, read
    from each frame's cursor (`id:`): a frame moves exactly one station's position."""
    from notifications.wire import parse_cursor

    seen: dict[str, list[int]] = {}
    last: dict[str, int] = {}
    for frame in frames:
        cursor = parse_cursor(frame.id)
        moved = [code for code, seq in cursor.items() if last.get(code) != seq]
        if last:
            assert len(moved) == 1, (frame.id, last)
        else:
            moved = [code for code in moved if code == json.loads(frame.data)["stationId"]]
        for code in moved:
            seen.setdefault(code, []).append(cursor[code])
        last = cursor
    return seen


def every_event_counted(total: int):
    """For collect_log_until: `total` notifications seen, and the faults they fired
    counted `total` times (raises in one transaction come as one frame)."""

    def done(frames: list[SSEEvent]) -> bool:
        notifications = sum(1 for f in frames if f.event == "notification")
        latest = {}
        for frame in frames:
            if frame.event == "fault":
                data = frame.json()
                latest[data["id"]] = data["occurrences"]
        return notifications >= total and sum(latest.values()) >= total

    return done
