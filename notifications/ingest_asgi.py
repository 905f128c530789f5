"""POST /api/event for API-key callers: a small ASGI app ahead of Django's stack.

Why a lane of its own: devices and services post thousands of small requests, and
Django's ASGI handler costs several milliseconds of thread round trips per request
before the view runs (docs/PERFORMANCE.md). Here a post costs one hop to the ingest
threads, where authentication, throttling, validation and storage run in one go.

Which requests take it (`takes_lane`): POST with an API key header, and nothing for
Django's middleware to do (cgm/lanes.py). Anything else (browsers and their CORS
preflights, sessions, plain HTTP to be redirected, unknown hosts) goes through Django
as before, to the DRF view in notifications/api.py. Both doors end in
notifications/ingest_request.ingest_posted, and their answers are the same
(tests/test_ingest_lane.py compares them).
"""

import json
from dataclasses import dataclass, field

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError

from access.api_auth import IsIngestKey, KeyRefusedError, key_caller
from access.models import ApiKey
from access.policy import key_from_headers
from access.throttle import ingest_limiter
from cgm.lanes import Headers, is_secure, plain_request, security_headers
from notifications.api_errors import ApiError, error_body, unavailable
from notifications.group_commit import committer
from notifications.ingest_request import body_too_large, ingest_posted
from notifications.ingest_threads import on_ingest_thread
from notifications.services import notification_ingest

INGEST_PATHS = ("/api/event", "/api/event/")


def takes_lane(scope) -> bool:
    if scope["method"] != "POST" or scope["path"] not in INGEST_PATHS:
        return False
    headers = Headers.from_scope(scope)
    return key_from_headers(headers) is not None and plain_request(scope, headers)


@dataclass
class Reply:
    status: int
    data: dict | list
    headers: dict = field(default_factory=dict)


def _error(exc: ApiError, **headers) -> Reply:
    return Reply(exc.status_code, error_body(exc.error, exc.message, exc.fields), headers)


def _parse_json(headers: Headers, body: bytes):
    content_type = headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if content_type and media_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f'Unsupported media type "{content_type}" in request.',
        )
    if not content_type or not body:
        return {}  # as DRF: no body parses to an empty object, which fails validation
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both
        detail = {"body": [f"JSON parse error - {exc}"]}
        raise ApiError(400, "invalid_json", "The body is not valid JSON.", detail) from None


def _no_constants(name):
    raise ValueError(f"Out of range float values are not JSON compliant: {name!r}")


def answer(headers: Headers, body: bytes | None, store=notification_ingest) -> Reply:
    """The whole ingest of one request, on an ingest thread. body is None when it was
    larger than CGM_INGEST_MAX_BODY_BYTES. Same order of checks as the DRF view:
    key, scope, rate, size, media type, JSON, then the events."""
    try:
        try:
            api_key = key_caller(key_from_headers(headers), headers, body)
        except KeyRefusedError as exc:
            raise ApiError(401, "unauthenticated", str(exc)) from None
        if api_key.scope != ApiKey.Scope.INGEST:
            raise ApiError(403, "forbidden", IsIngestKey.message)
        wait = ingest_limiter.wait_seconds(api_key.key_hash)
        if wait:
            message = f"Request was throttled. Expected available in {wait} seconds."
            return _error(ApiError(429, "throttled", message), **{"Retry-After": str(wait)})
        if body is None:
            raise body_too_large()
        status, data = ingest_posted(api_key, _parse_json(headers, body), store)
        return Reply(status, data)
    except DatabaseError as exc:
        return _error(unavailable(exc), **{"Retry-After": "1"})
    except ApiError as exc:
        extra = {"WWW-Authenticate": 'Bearer realm="cgm"'} if exc.status_code == 401 else {}
        return _error(exc, **extra)


async def ingest_app(scope, receive, send):
    headers = Headers.from_scope(scope)
    try:
        body = await _read_body(receive, headers)
    except _ClientGoneError:
        return  # the sender left before its body arrived: nothing to store or answer
    reply = await on_ingest_thread(answer, headers, body, committer.store)
    await _send(send, reply, is_secure(scope, headers))


class _ClientGoneError(Exception):
    pass


async def _read_body(receive, headers: Headers) -> bytes | None:
    """The request body, or None past the size limit (the rest is not read)."""
    limit = settings.CGM_INGEST_MAX_BODY_BYTES
    try:
        if int(headers.get("content-length") or 0) > limit:
            return None
    except ValueError:
        pass
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError  # never act on a body cut short
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send, reply: Reply, secure: bool) -> None:
    content = json.dumps(
        reply.data, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":")
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"vary", b"Accept"),  # as DRF's answers
        (b"allow", b"POST, OPTIONS"),
        *security_headers(secure),
        *((name.lower().encode(), value.encode()) for name, value in reply.headers.items()),
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
