"""Keep-alive comments for open streams, from one ticker per process.

A stream used to wait for its next event with asyncio.wait_for(..., heartbeat): a new
task and a timer per wait, per stream, per event. With thousands of streams that was a
tenth of the server's CPU (docs/PERFORMANCE.md). Here streams simply wait for their
listener's event; one task wakes each of them every CGM_SSE_HEARTBEAT_SECONDS to write
a comment line, which keeps proxies from closing an idle connection (or, for a stream
opened with ?heartbeat=1, a `heartbeat` event, which lets the client notice a stall).
"""

import asyncio

from django.conf import settings


class KeepAlive:
    def __init__(self):
        self._streams: set = set()
        self._task: asyncio.Task | None = None

    def add(self, stream) -> None:
        """stream: anything with a `keepalive_due()` method (NotificationStream)."""
        self._streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._tick())

    def discard(self, stream) -> None:
        self._streams.discard(stream)

    async def _tick(self) -> None:
        while self._streams:
            await asyncio.sleep(settings.CGM_SSE_HEARTBEAT_SECONDS)
            for stream in list(self._streams):
                stream.keepalive_due()


keepalive = KeepAlive()
