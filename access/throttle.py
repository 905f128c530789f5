"""Per-key request rate for the ingest, counted in this process.

GCRA (a leaky bucket kept as one timestamp per key): constant memory and time per
request whatever the rate, where DRF's SimpleRateThrottle keeps one timestamp per
request seen in the window. Counters live per process, so with N workers a key can
reach N times the rate (docs/SCALING.md); no Redis round trip on the ingest path.
"""

import math
import threading
import time

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

_parse_rate = SimpleRateThrottle.parse_rate  # "N/s", "N/m", "N/h", "N/d"


class KeyRateLimiter:
    def __init__(self):
        self._due: dict[str, float] = {}  # key -> theoretical arrival time of the next request
        self._lock = threading.Lock()

    def wait_seconds(self, key: str, rate: str | None = None) -> int:
        """0 if this request may pass (and counts it), else whole seconds to wait."""
        allowed, period = _parse_rate(None, rate or settings.CGM_INGEST_RATE)
        interval = period / allowed
        now = time.monotonic()
        with self._lock:
            due = max(self._due.get(key, now), now)
            over = due - now - (period - interval)
            if over > 0:
                return max(1, math.ceil(over))
            if len(self._due) > 100_000:  # keys that stopped posting must not pile up
                self._due = {k: v for k, v in self._due.items() if v > now}
            self._due[key] = due + interval
            return 0

    def reset(self) -> None:
        with self._lock:
            self._due.clear()


ingest_limiter = KeyRateLimiter()
