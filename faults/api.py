"""The faults and state API: what is broken now, and acting on it.

GET  /api/stations/<code>/state          one station's snapshot, with its cursor
GET  /api/state?station=A&station=B      several stations' snapshot, with one cursor
GET  /api/fault-counts                   unresolved critical/error/open counts per readable
                                         station (the console's picker badges)
GET  /api/faults/<id>                    one fault
POST /api/faults/<id>/acknowledge        operators: session users of the station (CSRF)
POST /api/faults/<id>/unacknowledge      and operate keys; body {"note": "..."} optional
POST /api/faults/<id>/resolve

Reading: the stations a caller may stream (login, subscribe or operate key). A fault of
a station the caller cannot read is 404, as if it did not exist.
"""

from rest_framework.response import Response
from rest_framework.views import APIView

from access.api_auth import API_AUTHENTICATION, IsOperator, IsSubscriber, request_stations
from access.models import ApiKey
from faults.actions import Actor, FaultResolvedError, act_on_fault
from faults.models import Fault, FaultAction
from faults.snapshot import UnknownStationsError, open_fault_counts, station_snapshot
from faults.wire import fault_data
from notifications.errors import ApiError
from notifications.history.api import EscapedJSONRenderer

MAX_NOTE = 2000


class _ReadView(APIView):
    renderer_classes = [EscapedJSONRenderer]
    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsSubscriber]


def _snapshot_response(request, codes: list[str]) -> Response:
    forbidden = request_stations(request, ApiKey.Scope.SUBSCRIBE).forbidden(codes)
    if forbidden:
        raise ApiError(
            403, "forbidden", "Not allowed to read these stations.", {"station": forbidden}
        )
    try:
        return Response(station_snapshot(codes))
    except UnknownStationsError as exc:
        raise ApiError(404, "not_found", "Unknown station.", {"station": exc.codes}) from None


class StationStateView(_ReadView):
    def get(self, request, station: str):
        return _snapshot_response(request, [station])


class StateView(_ReadView):
    def get(self, request):
        codes = list(dict.fromkeys(request.query_params.getlist("station")))
        if not codes:
            raise ApiError(400, "invalid", "Name at least one station.", {"station": ["Required."]})
        return _snapshot_response(request, codes)


class FaultCountsView(_ReadView):
    """Every readable station's unresolved faults, counted: the console streams only the
    stations picked, and polls this for the badges of the others."""

    def get(self, request):
        readable = request_stations(request, ApiKey.Scope.SUBSCRIBE)
        counts = open_fault_counts(None if readable.everything else readable.codes)
        return Response({"stations": counts})


def _readable_fault(request, fault_id: int) -> Fault:
    fault = Fault.objects.select_related("station", "box", "connector").filter(pk=fault_id).first()
    if fault is None or not request_stations(request, ApiKey.Scope.SUBSCRIBE).allows(
        fault.station.code
    ):
        raise ApiError(404, "not_found", "No such fault.")
    return fault


class FaultDetailView(_ReadView):
    def get(self, request, fault_id: int):
        return Response(fault_data(_readable_fault(request, fault_id)))


class FaultActionView(APIView):
    """POST .../acknowledge, /unacknowledge, /resolve: 200 with the fault."""

    renderer_classes = [EscapedJSONRenderer]
    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsOperator]
    action: str = ""  # set per URL (as_view(action=...))

    def post(self, request, fault_id: int):
        fault = _readable_fault(request, fault_id)
        note = _note(request.data)
        try:
            fault = act_on_fault(fault.pk, self.action, _actor(request), note)
        except FaultResolvedError:
            raise ApiError(
                409, "conflict", "The fault is resolved; it takes no more actions."
            ) from None
        return Response(fault_data(fault))


def _note(body) -> str | None:
    if body in (None, "") or body == {}:
        return None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "Send a JSON object.", {"body": ["Expected an object."]})
    note = body.get("note")
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise ApiError(
            400,
            "invalid",
            "The note is invalid.",
            {"note": [f"A string of at most {MAX_NOTE} characters."]},
        )
    return note


def _actor(request) -> Actor:
    if isinstance(request.auth, ApiKey):
        name = f"key:{request.auth.name}"
    else:
        name = request.user.get_username()
    return Actor(
        name=name,
        remote_addr=request.META.get("REMOTE_ADDR") or None,
        user_agent=request.headers.get("User-Agent", ""),
    )


acknowledge = FaultActionView.as_view(action=FaultAction.Action.ACKNOWLEDGED)
unacknowledge = FaultActionView.as_view(action=FaultAction.Action.UNACKNOWLEDGED)
resolve = FaultActionView.as_view(action=FaultAction.Action.RESOLVED)
