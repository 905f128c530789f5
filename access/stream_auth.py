"""Identifying the caller of a stream (async: streams are served outside threads).

In order: an API key (Authorization: Bearer, or X-Api-Key) for fetch-based clients,
a short-lived signed ?token= for EventSource clients that cannot send headers, and
the session cookie of a logged-in user (the dashboard).
"""

from django.conf import settings

from access.models import ApiKey
from access.policy import Principal, find_key, key_from_headers, note_key_used
from access.tokens import read_stream_token
from cgm.db_pool import run_db


class StreamAuthError(Exception):
    pass


def _subscribe_key(raw: str) -> ApiKey | None:
    api_key = find_key(raw)
    if api_key is None or api_key.scope != ApiKey.Scope.SUBSCRIBE:
        return None
    note_key_used(api_key)
    return api_key


async def stream_principal(request) -> Principal:
    raw_key = key_from_headers(request.headers)
    if raw_key:
        api_key = await run_db(_subscribe_key, raw_key)
        if api_key is None:
            raise StreamAuthError("Invalid, revoked or non-subscribe API key.")
        return Principal("key", api_key.pk)

    token = request.GET.get("token")
    if token:
        principal = read_stream_token(token, settings.CGM_STREAM_TOKEN_SECONDS)
        if principal is None:
            raise StreamAuthError("Invalid or expired stream token.")
        return principal

    user = await request.auser()
    if user.is_authenticated:
        return Principal("user", user.pk)
    raise StreamAuthError("Log in, or send a subscribe API key or a stream token.")
