from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from faults import api as faults
from notifications import dashboard as views
from notifications import errors
from notifications.history import api
from notifications.ingest.api import event_ingest
from notifications.streams import view as stream
from notifications.streams.token import StreamTokenView

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/event", event_ingest, name="event-ingest"),
    path("api/event/", event_ingest),
    path("api/notifications", api.NotificationHistoryView.as_view(), name="notification-history"),
    path("api/stream-token", StreamTokenView.as_view(), name="stream-token"),
    path("api/state", faults.StateView.as_view(), name="state"),
    path(
        "api/stations/<str:station>/state",
        faults.StationStateView.as_view(),
        name="station-state",
    ),
    path("api/fault-counts", faults.FaultCountsView.as_view(), name="fault-counts"),
    path("api/faults/<int:fault_id>", faults.FaultDetailView.as_view(), name="fault"),
    path("api/faults/<int:fault_id>/acknowledge", faults.acknowledge, name="fault-acknowledge"),
    path(
        "api/faults/<int:fault_id>/unacknowledge", faults.unacknowledge, name="fault-unacknowledge"
    ),
    path("api/faults/<int:fault_id>/resolve", faults.resolve, name="fault-resolve"),
    path("api/sse/", stream.station_stream, name="stream-stations"),
    path("api/sse/stations/<str:station>/", stream.station_stream, name="stream-station"),
    # Pushpin's next link for a stream it holds (notifications/streams/pushpin.py).
    path("api/sse/next/<str:caller>/", stream.station_stream, name="stream-next"),
    path(
        "api/sse/next/<str:caller>/<str:after>/<str:tag>/",
        stream.station_stream,
        name="stream-page",
    ),
    # Anything else under /api/ is a JSON 404 (in local mode too, where Django would
    # show its HTML debug page).
    re_path(r"^api/", errors.api_not_found),
]

handler400 = errors.bad_request
handler404 = errors.api_not_found
handler500 = errors.server_error

if settings.CGM_SERVE_STATIC:
    # The embedded default has no web server in front: Daphne serves the admin's and
    # the dashboard's few static files itself. Behind nginx, set CGM_SERVE_STATIC=0.
    urlpatterns.append(re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}))
