"""HTTP API: POST /api/event (ingest) and GET /api/notifications (history).

Thin on purpose: parse and validate, call the service, render the stored rows.
"""

from functools import partial

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
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
from notifications.ingest_request import body_too_large, ingest_posted
from notifications.ingest_threads import on_ingest_thread
from notifications.models import Notification
from notifications.representation import notification_data


class EventIngestView(APIView):
    """POST /api/event through Django's full stack. API-key posts from devices and
    services usually take the ASGI lane instead (notifications/ingest_asgi.py); both
    end in ingest_posted."""

    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsIngestKey]
    throttle_classes = [IngestKeyThrottle]

    def post(self, request):
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > settings.CGM_INGEST_MAX_BODY_BYTES:
            raise body_too_large()
        try:
            body = request.data
        except RequestDataTooBig:
            raise body_too_large() from None
        code, data = ingest_posted(request.auth, body)
        return Response(data, status=code)


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


_ingest_view = EventIngestView.as_view()


async def event_ingest(request, *args, **kwargs):
    if isinstance(request, ASGIRequest):
        # cgm/asgi.py serves /api/event outside Django's per-request thread context:
        # the view runs on the ingest's own threads.
        return await on_ingest_thread(partial(_ingest_view, request, *args, **kwargs))
    # Under WSGI (the test client, a WSGI deployment) Django's own sync handling
    # applies: the view runs in the request's thread.
    return await sync_to_async(_ingest_view)(request, *args, **kwargs)


event_ingest.csrf_exempt = True  # DRF decides (API keys; no session authentication)
