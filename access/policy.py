"""Who is calling, and which stations they may read or post for."""

import hmac
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from access.models import KEY_PREFIX, ApiKey, StationAccess, hash_key
from cgm.db_rows import aware_row, require_plain
from cgm.pg_statements import Read, fetch_rows


@dataclass(frozen=True)
class StationSet:
    """Stations a caller may use: every station, or these codes."""

    everything: bool
    codes: frozenset[str] = frozenset()

    def allows(self, code: str) -> bool:
        return self.everything or code in self.codes

    def forbidden(self, codes) -> list[str]:
        return [code for code in codes if not self.allows(code)]


NOTHING = StationSet(False)
EVERYTHING = StationSet(True)


@dataclass(frozen=True)
class Principal:
    """A stream or API caller: a user (session) or an API key. Hashable for caching.

    A stream opened with a login session names it (`session_key`, kept server-side); one
    opened with a `?token=` names its grant. Either ends with that session's logout."""

    kind: str  # "user" or "key"
    id: int
    session_key: str = ""
    grant: int | None = None


def user_stations(user) -> StationSet:
    if user is None or not user.is_active:
        return NOTHING
    if user.is_superuser:
        return EVERYTHING
    codes = StationAccess.objects.filter(user=user).values_list("station__code", flat=True)
    group_codes = StationAccess.objects.filter(group__user=user).values_list(
        "station__code", flat=True
    )
    return StationSet(False, frozenset(codes) | frozenset(group_codes))


# An operate key reads everything a subscribe key reads: an operator must see what they act on.
READING_SCOPES = frozenset({ApiKey.Scope.SUBSCRIBE, ApiKey.Scope.OPERATE})


def key_stations(api_key: ApiKey | None, scope: str) -> StationSet:
    """The stations a key may use for `scope` (reading with SUBSCRIBE covers operate keys)."""
    if api_key is None or not api_key.is_active:
        return NOTHING
    if api_key.scope != scope and not (
        scope == ApiKey.Scope.SUBSCRIBE and api_key.scope in READING_SCOPES
    ):
        return NOTHING
    if api_key.all_stations:
        return EVERYTHING
    return StationSet(False, frozenset(api_key.stations.values_list("code", flat=True)))


def readable_stations(principal: Principal) -> StationSet:
    """Fresh from the database: used on connect and again when access may have changed."""
    from access.tokens import grant_is_live, session_exists  # tokens builds on this module

    if principal.grant is not None and not grant_is_live(principal):
        return NOTHING
    if principal.session_key and not session_exists(principal.session_key):
        return NOTHING  # logged out (or the session expired)
    if principal.kind == "user":
        user = get_user_model().objects.filter(pk=principal.id).first()
        return user_stations(user)
    api_key = ApiKey.objects.filter(pk=principal.id).first()
    return key_stations(api_key, ApiKey.Scope.SUBSCRIBE)


# Keys seen in the last few seconds, by hash: one query saved on every request.
# A change in this process clears it (access/signals.py); others see it within
# KEY_CACHE_SECONDS, in line with "revocation takes effect within seconds".
KEY_CACHE_SECONDS = 2.0
_key_cache: dict[str, tuple[float, ApiKey | None]] = {}
_key_cache_lock = threading.Lock()


_KEY_FIELDS = require_plain(ApiKey)  # read with a plain cursor, below
_ACTIVE_KEY = Read(
    "cgm_active_key",
    f"SELECT {', '.join(f.column for f in ApiKey._meta.concrete_fields)} "  # noqa: S608
    f"FROM {ApiKey._meta.db_table} WHERE prefix = %s AND revoked_at IS NULL LIMIT 1",
    ("text",),
)  # the model's own columns and table; the prefix is a parameter. Prepared on
# PostgreSQL (cgm/pg_statements.py): every stream open reads it.


def forget_cached_keys() -> None:
    with _key_cache_lock:
        _key_cache.clear()


def find_key(raw: str, *, cached: bool = True) -> ApiKey | None:
    """The active key for a presented secret, or None. Constant-time hash comparison.
    Streams open rarely and live long: they ask with cached=False."""
    parts = raw.split("_")
    if len(parts) < 3 or parts[0] != KEY_PREFIX:
        return None
    digest = hash_key(raw)
    now = time.monotonic()
    with _key_cache_lock:
        hit = _key_cache.get(digest)
    if cached and hit is not None and hit[0] > now:
        return hit[1]
    # Plain SQL, prepared on PostgreSQL: every stream open and every uncached request
    # asks, and building the ORM's query (or a raw() queryset's column mapping), or
    # planning it each time, cost more than the database's answer (docs/PERFORMANCE.md,
    # issue 13).
    rows = fetch_rows(_ACTIVE_KEY, [parts[1]])
    api_key = None
    if rows:
        api_key = ApiKey.from_db(connection.alias, _KEY_FIELDS, aware_row(rows[0]))
    if api_key is not None and not hmac.compare_digest(api_key.key_hash, digest):
        api_key = None
    with _key_cache_lock:
        if len(_key_cache) > 10_000:  # wrong keys must not grow it without bound
            _key_cache.clear()
        _key_cache[digest] = (now + KEY_CACHE_SECONDS, api_key)
    return api_key


def note_key_used(api_key: ApiKey) -> None:
    # At most one write a minute per key: "last used" is for humans, not an audit log.
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


def key_from_headers(headers) -> str | None:
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("X-Api-Key", "").strip() or None
