"""The operators' console: one server-rendered page, plain JavaScript, no build step.

The page's scripts are static/console/*.js (README, "The operator's console"); every
text they show comes from notifications/console_strings.py, rendered into the page.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _

from access.policy import user_stations
from notifications.console_strings import console_strings
from stations.models import Station

# Rows the dashboard loads per selection, and keeps on screen at most.
HISTORY_LIMIT = 50
MAX_ROWS = 500
# The severity filter's choices, most severe first (faults/models.py Severity).
SEVERITIES = [
    ("critical", _("Critical")),
    ("error", _("Error")),
    ("warning", _("Warning")),
    ("info", _("Info")),
]


def _requested_codes(request) -> list[str]:
    # ?station=A&station=B (what the page writes) and ?station=A,B (as the stream takes).
    codes = [
        part.strip()
        for value in request.GET.getlist("station")
        for part in value.split(",")
        if part.strip()
    ]
    return list(dict.fromkeys(codes))


@login_required
def dashboard(request):
    # Only the stations this operator may read: the history and the stream would refuse
    # the others anyway.
    readable = user_stations(request.user)
    stations = Station.objects.order_by("code")
    if not readable.everything:
        stations = stations.filter(code__in=readable.codes)
    stations = list(stations.values_list("code", "name"))
    offered = {code for code, _ in stations}
    requested = _requested_codes(request)
    return render(
        request,
        "notifications/dashboard.html",
        {
            "stations": stations,
            # The page is rendered with the link's stations already ticked, so a reload
            # or a shared link shows the same feed. Others are named, not dropped
            # silently, with no hint whether they exist.
            "selected": {code for code in requested if code in offered},
            "unavailable_stations": [code for code in requested if code not in offered],
            "max_stations": settings.CGM_SSE_MAX_STATIONS,
            # The page's stream asks for heartbeats at this interval (stream.js watchdog).
            "heartbeat_seconds": settings.CGM_SSE_HEARTBEAT_SECONDS,
            "history_limit": HISTORY_LIMIT,
            "max_rows": MAX_ROWS,
            "console_strings": console_strings(),
            "severities": SEVERITIES,
        },
    )
