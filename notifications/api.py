"""HTTP API: POST /api/event (ingest) and GET /api/notifications (history).

Thin on purpose: parse and validate, call the service, render the stored rows.
"""

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections, connection
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.api_auth import (
    API_AUTHENTICATION,
    IngestKeyThrottle,
    IsIngestKey,
    IsSubscriber,
    request_principal,
    request_stations,
)
from access.models import ApiKey
from access.tokens import issue_stream_token
from notifications.api_errors import ApiError
from notifications.cursor import format_cursor
from notifications.eventlog import log_positions
from notifications.models import Notification
from notifications.representation import notification_data
from notifications.serializers import validate_events
from notifications.services import notification_ingest


def _too_large(message: str) -> ApiError:
    return ApiError(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "too_large", message)


class EventIngestView(APIView):
    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsIngestKey]
    throttle_classes = [IngestKeyThrottle]

    def post(self, request):
        limit = settings.CGM_INGEST_MAX_BODY_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise _too_large(f"The body is larger than {limit} bytes.")
        try:
            body = request.data
        except RequestDataTooBig:
            raise _too_large(f"The body is larger than {limit} bytes.") from None

        batch = isinstance(body, list)
        raw_events = body if batch else [body]
        if batch and not raw_events:
            raise ApiError(400, "invalid", "The batch is empty.", {"body": ["Empty array."]})
        if len(raw_events) > settings.CGM_INGEST_MAX_BATCH:
            raise _too_large(f"At most {settings.CGM_INGEST_MAX_BATCH} events per batch.")

        # Before validation, so a key limited to some stations learns nothing about
        # whether other stations exist.
        allowed = request_stations(request, ApiKey.Scope.INGEST)
        forbidden = {
            (f"[{index}].stationId" if batch else "stationId"): [
                f"This key may not post for station {raw['stationId']!r}."
            ]
            for index, raw in enumerate(raw_events)
            if isinstance(raw, dict)
            and isinstance(raw.get("stationId"), str)
            and not allowed.allows(raw["stationId"])
        }
        if forbidden:
            raise ApiError(
                403, "forbidden", "Station outside this key; nothing was stored.", forbidden
            )

        events, errors = validate_events(raw_events, batch=batch)
        if errors:
            message = (
                "The batch is invalid; nothing was stored." if batch else "The event is invalid."
            )
            raise ApiError(400, "invalid", message, errors)

        stored = notification_ingest(events=events)
        any_created = any(s.created for s in stored)
        code = status.HTTP_201_CREATED if any_created else status.HTTP_200_OK
        data = [notification_data(s.notification) for s in stored]
        return Response(data if batch else data[0], status=code)


class NotificationHistoryView(APIView):
    """Newest notifications of some stations, with the cursor they are valid at.

    A dashboard shows this list, then streams from `cursor`: no gap, no repeats.
    """

    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsSubscriber]

    def get(self, request):
        codes = list(dict.fromkeys(request.query_params.getlist("station")))
        if not codes:
            raise ApiError(400, "invalid", "Name at least one station.", {"station": ["Required."]})
        forbidden = request_stations(request, ApiKey.Scope.SUBSCRIBE).forbidden(codes)
        if forbidden:
            raise ApiError(
                403, "forbidden", "Not allowed to read these stations.", {"station": forbidden}
            )
        try:
            limit = min(max(int(request.query_params.get("limit", 50)), 1), 500)
        except ValueError:
            raise ApiError(
                400, "invalid", "limit must be an integer.", {"limit": ["Not an integer."]}
            ) from None

        # Positions first: every row below is at or before them, so streaming from this
        # cursor neither repeats a row of the list nor misses one committed meanwhile.
        positions = log_positions(codes)
        missing = [code for code in codes if code not in positions]
        if missing:
            raise ApiError(404, "not_found", "Unknown station.", {"station": missing})
        rows = (
            Notification.objects.filter(station__code__in=codes)
            .select_related("station", "box", "connector")
            .order_by("-id")[:limit]
        )
        items = [
            notification_data(row)
            for row in rows
            if row.seq <= positions[row.station.code].last_seq
        ]
        cursor = format_cursor({code: positions[code].last_seq for code in codes})
        return Response({"cursor": cursor, "results": items})


class StreamTokenView(APIView):
    """POST: a short-lived token for `EventSource(url + "&token=...")`, which cannot
    send an Authorization header. Session callers need the CSRF token (a write)."""

    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsSubscriber]

    def post(self, request):
        token = issue_stream_token(request_principal(request))
        return Response({"token": token, "expiresIn": settings.CGM_STREAM_TOKEN_SECONDS})


# The ingest runs on a fixed pool of threads that live as long as the process, instead
# of Django's new thread per request (cgm/asgi.py serves /api/event outside the
# per-request thread context): no thread start and stop per post, and each thread keeps
# its database connection and cache client. One thread on SQLite (one writer anyway);
# several on PostgreSQL, whose commits wait for the WAL flush and overlap when
# concurrent.
_ingest_threads = ThreadPoolExecutor(
    max_workers=1 if connection.vendor == "sqlite" else settings.CGM_INGEST_THREADS,
    thread_name_prefix="ingest",
)
_ingest_view = EventIngestView.as_view()


def _ingest_on_pool_thread(request, *args, **kwargs):
    try:
        return _ingest_view(request, *args, **kwargs)
    finally:
        # Hand the connection back (to the PostgreSQL pool; SQLite keeps its own):
        # Django's end-of-request clean-up runs on another thread and never sees it.
        close_old_connections()


async def event_ingest(request, *args, **kwargs):
    if isinstance(request, ASGIRequest):
        run = sync_to_async(
            _ingest_on_pool_thread, thread_sensitive=False, executor=_ingest_threads
        )
    else:
        # Under WSGI (the test client, a WSGI deployment) Django's own sync handling
        # applies: the view runs in the request's thread.
        run = sync_to_async(_ingest_view)
    return await run(request, *args, **kwargs)


event_ingest.csrf_exempt = True  # DRF decides (API keys; no session authentication)
