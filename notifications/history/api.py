"""GET /api/notifications: the newest notifications with the cursor they are valid at."""

from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from access.api_auth import (
    API_AUTHENTICATION,
    IsSubscriber,
    request_stations,
)
from access.models import ApiKey
from notifications.errors import ApiError
from notifications.log import log_positions
from notifications.models import Notification
from notifications.wire import format_cursor, notification_data


class EscapedJSONRenderer(JSONRenderer):
    """Non-ASCII as JSON escapes: the same data, and a row that holds a lone surrogate
    (stored before the ingest refused them) reads back as its escape instead of failing
    the whole history of its station."""

    ensure_ascii = True


class NotificationHistoryView(APIView):
    """Newest notifications of some stations, with the cursor they are valid at.

    A dashboard shows this list, then streams from `cursor`: no gap, no repeats.
    """

    renderer_classes = [EscapedJSONRenderer]
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
