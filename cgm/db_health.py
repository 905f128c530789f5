"""Fail fast while the database is known to be away.

When PostgreSQL stops, every new connection waits for the pool (DB_POOL_TIMEOUT) before
it fails, and requests queue behind each other's waits: posts and stream opens hung for
seconds and were then answered late, instead of the documented 503 at once. So the
first connection failure opens this breaker for CGM_DB_RETRY_SECONDS: meanwhile the
ingest's writer and the streams' log reads fail at once with that same error (503 with
Retry-After for their clients); after it, the next call tries the database again.
Only connection-level failures count, never a constraint or a deadlock.
"""

import threading
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError

_lock = threading.Lock()
_open_until = 0.0
_last_error: Exception | None = None


class DatabaseAwayError(OperationalError):
    """Raised by check() without trying the database (so never a new failure itself)."""


def is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseAwayError):
        return False
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    state = getattr(exc.__cause__, "sqlstate", None)
    # No SQLSTATE: the connection could not be made (or the pool timed out); class 08:
    # connection exceptions; 57P01-57P03: the server shut down or is starting.
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def check() -> None:
    """Raise the last connection failure while the breaker is open."""
    if _last_error is not None and time.monotonic() < _open_until:
        raise DatabaseAwayError(f"database unavailable (retrying shortly): {_last_error}")


def failed(exc: BaseException) -> None:
    global _open_until, _last_error
    if is_connection_failure(exc):
        with _lock:
            _last_error = exc
            _open_until = time.monotonic() + settings.CGM_DB_RETRY_SECONDS
