"""Identifying the caller of a stream (async: streams are served outside threads).

In order: an API key (Authorization: Bearer, or X-Api-Key) for fetch-based clients,
a short-lived signed ?token= for EventSource clients that cannot send headers, and
the session cookie of a logged-in user (the dashboard).
"""

from access.models import ApiKey
from access.policy import READING_SCOPES, Principal, find_key, key_from_headers, note_key_used
from access.tokens import read_stream_token
from cgm.db_pool import run_db


class StreamAuthError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _active_key(raw: str) -> ApiKey | None:
    api_key = find_key(raw, cached=False)
    if api_key is not None:
        note_key_used(api_key)
    return api_key


async def stream_principal(request) -> Principal:
    raw_key = key_from_headers(request.headers)
    if raw_key:
        api_key = await run_db(_active_key, raw_key)
        if api_key is None:
            raise StreamAuthError(401, "Invalid or revoked API key.")
        if api_key.scope not in READING_SCOPES:
            raise StreamAuthError(
                403, "Streams need an API key with the subscribe or operate scope."
            )
        return Principal("key", api_key.pk)

    token = request.GET.get("token")
    if token:
        principal = await run_db(read_stream_token, token)
        if principal is None:
            raise StreamAuthError(401, "Invalid, expired or ended stream token.")
        return principal

    user = await request.auser()
    if user.is_authenticated:
        # Bound to this login session: its logout ends the stream (access/revocation.py).
        return Principal("user", user.pk, session_key=request.session.session_key or "")
    raise StreamAuthError(401, "Log in, or send a subscribe API key or a stream token.")
