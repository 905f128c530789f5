"""Identifying the caller of a stream. Runs with the rest of the stream's opening on
the stream database threads (notifications/streams/door.py), so its queries cost no
hop of their own.

In order: an API key (Authorization: Bearer, or X-Api-Key) for fetch-based clients,
a short-lived signed ?token= for EventSource clients that cannot send headers, and
the session cookie of a logged-in user (the dashboard).
"""

from access.models import ApiKey
from access.policy import (
    READING_SCOPES,
    Principal,
    StationSet,
    find_key,
    key_from_headers,
    key_stations,
    note_key_used,
)
from access.tokens import read_stream_token


class StreamAuthError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _active_key(raw: str) -> ApiKey | None:
    api_key = find_key(raw, cached=False)
    if api_key is not None:
        note_key_used(api_key)
    return api_key


def stream_principal(request) -> tuple[Principal, StationSet | None]:
    """The caller, and for an API key the stations it may read, from the key row just
    read (the key is not read twice; a key limited to some stations still reads
    them). None for the others: readable_stations() then reads them."""
    raw_key = key_from_headers(request.headers)
    if raw_key:
        api_key = _active_key(raw_key)
        if api_key is None:
            raise StreamAuthError(401, "Invalid or revoked API key.")
        if api_key.scope not in READING_SCOPES:
            raise StreamAuthError(
                403, "Streams need an API key with the subscribe or operate scope."
            )
        return Principal("key", api_key.pk), key_stations(api_key, ApiKey.Scope.SUBSCRIBE)

    token = request.GET.get("token")
    if token:
        principal = read_stream_token(token)
        if principal is None:
            raise StreamAuthError(401, "Invalid, expired or ended stream token.")
        return principal, None

    user = request.user
    if user.is_authenticated:
        # Bound to this login session: its logout ends the stream (access/revocation.py).
        return Principal("user", user.pk, session_key=request.session.session_key or ""), None
    raise StreamAuthError(401, "Log in, or send a subscribe API key or a stream token.")
