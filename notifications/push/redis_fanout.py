"""Fan-out between server processes over Redis pub/sub (set REDIS_URL).

Each process delivers its own notifications to its own streams at once (django-
eventstream's listener manager, notifications/publish.py) and publishes them to Redis for the
other processes, whose subscriber forwards them to their streams. This replaces
django-eventstream's own Redis mode, whose listener dies silently when Redis drops
and whose send_event raises after the write (DESIGN.md trap 5). Here:

- the subscriber reconnects by itself, with backoff, forever; after any outage it
  tells its streams to catch up from the notification log, so nothing published
  meanwhile is lost;
- a failed publish never fails the ingest (the row is committed; the caller gets its
  201). A retry thread then broadcasts a "resync" once Redis answers again, so every
  process's streams read what they missed from the log.

Redis carries hints, never the only copy: the log stays the source of truth.
"""

import asyncio
import contextlib
import json
import logging
import threading
import uuid

from django.conf import settings

from notifications.push.local import LiveEvent, local_channels

logger = logging.getLogger(__name__)

REDIS_CHANNEL = "cgm:notifications"
# Messages from this process are skipped by its own subscriber: it delivered them locally.
ORIGIN = uuid.uuid4().hex

_publisher = None
_publisher_lock = threading.Lock()
_resync_pending = threading.Event()
_retrier: threading.Thread | None = None


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def _client():
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            import redis

            _publisher = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
            )
        return _publisher


def broadcast(events: list[tuple[str, str, str, int]]) -> None:
    """Publish (channel, event type, data, id) tuples to the other processes."""
    message = json.dumps({"o": ORIGIN, "e": events})
    try:
        _client().publish(REDIS_CHANNEL, message)
    except Exception:
        logger.warning("Redis publish failed; streams will catch up from the log", exc_info=True)
        _schedule_resync()


def _schedule_resync() -> None:
    global _retrier
    _resync_pending.set()
    with _publisher_lock:
        if _retrier is None or not _retrier.is_alive():
            _retrier = threading.Thread(target=_resync_when_back, name="redis-resync", daemon=True)
            _retrier.start()


def _resync_when_back() -> None:
    delay = 0.5
    while _resync_pending.is_set():
        try:
            _resync_pending.clear()
            _client().publish(REDIS_CHANNEL, json.dumps({"o": ORIGIN, "resync": True}))
            catch_up_all_local_streams()
            return
        except Exception:
            _resync_pending.set()
            threading.Event().wait(delay)
            delay = min(delay * 2, 5)


def catch_up_all_local_streams() -> None:
    """Make every open stream of this process re-read the log."""
    local_channels.catch_up_all()


class Subscriber:
    """One per process, started by the first stream; runs until the process ends."""

    def __init__(self):
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()

    def ensure_started(self) -> None:
        if enabled() and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        import redis.asyncio as aioredis

        delay = 0.2
        # True at first too: streams opened before the subscription was in place
        # re-read the log once it is, in case another process published meanwhile.
        had_outage = True
        while True:
            client = aioredis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=5
            )
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(REDIS_CHANNEL)
                self.connected.set()
                if had_outage:
                    logger.info("Redis subscriber connected; streams catch up from the log")
                    catch_up_all_local_streams()
                    had_outage = False
                delay = 0.2
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                if not had_outage:
                    logger.warning("Redis subscriber lost its connection (%s); reconnecting", exc)
                had_outage = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            finally:
                # Already broken or done with: nothing useful to do if closing fails too.
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _deliver(self, raw: bytes) -> None:
        message = json.loads(raw)
        if message.get("o") == ORIGIN:
            return
        if message.get("resync"):
            catch_up_all_local_streams()
            return
        local_channels.deliver([LiveEvent(*event) for event in message["e"]])


subscriber = Subscriber()
