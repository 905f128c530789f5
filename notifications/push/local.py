"""In-process delivery: the streams this process holds, by channel (a station code).

The project owns this piece instead of using django-eventstream's ListenerManager
(docs/EVENT_FLOW.md, "Why the project delivers locally itself"): that manager wakes every
listener of a channel with its own `call_soon_threadsafe` from the publishing thread
(2,000 streams on 100 stations at 200 events/s: 4,000 self-pipe writes and loop
iterations a second), keeps at most 10 events per listener in a module constant, and
exposes its queues only through its lock and attributes. Here a publish from any thread
is one callback into the event loop, which queues the events for every listener of their
channels and wakes each listener once.

Everything a listener holds is touched only on the event loop's thread, so no lock is
needed around it. A listener that falls CGM_SSE_MAX_PENDING events behind on a channel
is marked `overflow`: its stream re-reads the log, so nothing is lost, only deferred.
"""

import asyncio
import threading

from django.conf import settings


class LiveEvent:
    """One published event: its channel, SSE event type, one-line JSON data, log seq."""

    __slots__ = ("channel", "type", "data", "id", "single_station_frame")

    def __init__(self, channel: str, event_type: str, data: str, seq: int):
        self.channel = channel
        self.type = event_type
        self.data = data
        self.id = seq
        # The frame every one-station stream sends for it, built by the first of them.
        self.single_station_frame = None


class Wakeup:
    """asyncio.Event's set/clear/wait for one waiter (its stream), without the deque of
    waiters every asyncio.Event allocates: 760 bytes saved per open stream."""

    __slots__ = ("_is_set", "_waiter")

    def __init__(self):
        self._is_set = False
        self._waiter: asyncio.Future | None = None

    def set(self) -> None:
        self._is_set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> None:
        if self._is_set:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Listener:
    """One open stream's inbox. (Slots: thousands stay open for hours.)"""

    __slots__ = ("channels", "items", "overflow", "wakeup")

    def __init__(self, channels: set[str]):
        self.channels = channels
        self.items: dict[str, list[LiveEvent]] = {}
        self.overflow = False
        self.wakeup = Wakeup()

    def take(self) -> tuple[dict[str, list[LiveEvent]], bool]:
        """What was queued since the last take, and whether some of it overflowed."""
        items, overflow = self.items, self.overflow
        self.items, self.overflow = {}, False
        self.wakeup.clear()
        return items, overflow


class LocalChannels:
    def __init__(self):
        self._by_channel: dict[str, set[Listener]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # The highest seq handed to deliver() per channel, listened to or not: a stream
        # that read its positions before it listened compares them with this (newest()).
        self._newest: dict[str, int] = {}
        # For _newest and _catch_ups. This process's publisher and the Redis subscriber
        # both deliver: without it, one could write back a lower seq than the other
        # just noted.
        self._lock = threading.Lock()
        # How many times every stream was told to re-read the log (catch_up_all): a
        # stream that read its positions before one and listened after it was not told.
        self._catch_ups = 0

    def newest(self, channel: str) -> int:
        """The highest seq of `channel` this process was asked to deliver (0: none).

        A stream reads its stations' positions, then listens (add()). An event
        committed in between either reached deliver() before the listener was added,
        and then counts here, or after, and then reaches the listener: a stream whose
        position is below this after add() has missed something and reads the log.
        (deliver() notes the seq before it looks for listeners; both run under the GIL.)
        """
        return self._newest.get(channel, 0)

    def add(self, listener: Listener) -> None:
        """Called on the event loop (the stream's own coroutine)."""
        self._loop = asyncio.get_running_loop()
        for channel in listener.channels:
            self._by_channel.setdefault(channel, set()).add(listener)

    def remove(self, listener: Listener) -> None:
        for channel in listener.channels:
            listeners = self._by_channel.get(channel)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._by_channel[channel]

    def deliver(self, events: list[LiveEvent]) -> None:
        """Queue events, in order, for this process's streams. Any thread."""
        loop = self._loop
        newest = self._newest
        with self._lock:
            for event in events:
                if event.id is not None and event.id > newest.get(event.channel, 0):
                    newest[event.channel] = event.id
        # Membership tests from another thread: a dict lookup is atomic, and an answer a
        # moment stale only means a listener that was leaving, or that reads the log
        # when it opens anyway.
        wanted = [event for event in events if event.channel in self._by_channel]
        if loop is None or not wanted:
            return
        if _running_loop() is loop:
            self._queue(wanted)
        else:
            loop.call_soon_threadsafe(self._queue, wanted)

    def catch_ups(self) -> int:
        """Counts catch_up_all() calls: read before the positions, compared after add()."""
        return self._catch_ups

    def catch_up_all(self) -> None:
        """Every open stream re-reads the log (after a Redis outage). Any thread."""
        with self._lock:
            self._catch_ups += 1  # before the streams are marked: see catch_ups()
        # A closed loop (the server shutting down) has no streams left to mark.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._mark_all_behind)

    def _queue(self, events: list[LiveEvent]) -> None:
        limit = settings.CGM_SSE_MAX_PENDING
        for event in events:
            for listener in self._by_channel.get(event.channel, ()):
                items = listener.items.setdefault(event.channel, [])
                if len(items) < limit:
                    items.append(event)
                else:
                    listener.overflow = True
                listener.wakeup.set()

    def _mark_all_behind(self) -> None:
        for listener in {one for group in self._by_channel.values() for one in group}:
            listener.overflow = True
            listener.wakeup.set()


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


local_channels = LocalChannels()
