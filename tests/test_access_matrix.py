"""Who may post and who may listen: every kind of caller against every kind of request.

A is station ST001, B is ST002. Stream requests only check the status here (the
stream body is read end to end in test_e2e_access.py).
"""

import json

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client

from access.models import ApiKey, StationAccess
from stations.models import Station
from tests.conftest import make_event

pytestmark = pytest.mark.django_db(transaction=True)

A, B = "ST001", "ST002"

ACTIONS = {
    "post A": ("POST", "/api/event", A),
    "post B": ("POST", "/api/event", B),
    "stream A": ("GET", f"/api/sse/stations/{A}/", None),
    "stream B": ("GET", f"/api/sse/stations/{B}/", None),
    "stream A+B": ("GET", f"/api/sse/?station={A}&station={B}", None),
    "history B": ("GET", f"/api/notifications?station={B}", None),
    "dashboard B": ("GET", "/", None),
}

# caller: expected status for each action, in ACTIONS order.
MATRIX = {
    "no credentials": [401, 401, 401, 401, 401, 401, 302],
    "wrong key": [401, 401, 401, 401, 401, 401, 302],
    "ingest key for A": [201, 403, 403, 403, 403, 403, 302],
    "subscribe key for A": [403, 403, 200, 403, 403, 403, 302],
    "user assigned A": [403, 403, 200, 403, 403, 403, 200],
    "group member assigned A": [403, 403, 200, 403, 403, 403, 200],
    "user assigned nothing": [403, 403, 403, 403, 403, 403, 200],
    "staff": [403, 403, 403, 403, 403, 403, 200],
    "superuser": [403, 403, 200, 200, 200, 200, 200],
}


@pytest.fixture
def callers():
    call_command("demo_data", stations=3, stdout=open("/dev/null", "w"))  # noqa: SIM115
    station_a = Station.objects.get(code=A)
    _, ingest_a = ApiKey.issue(name="ingest A", scope="ingest", stations=[station_a])
    _, subscribe_a = ApiKey.issue(name="read A", scope="subscribe", stations=[station_a])

    user_a = User.objects.create_user("op-a", password="x")
    StationAccess.objects.create(station=station_a, user=user_a)
    group = Group.objects.create(name="depot A")
    StationAccess.objects.create(station=station_a, group=group)
    member = User.objects.create_user("member-a", password="x")
    member.groups.add(group)
    nobody = User.objects.create_user("op-none", password="x")
    staff = User.objects.create_user("staff", password="x", is_staff=True)
    root = User.objects.create_superuser("root", password="x")

    def bearer(key):
        return {"headers": {"Authorization": f"Bearer {key}"}}

    return {
        "no credentials": {},
        "wrong key": bearer("cgm_00000000_wrong"),
        "ingest key for A": bearer(ingest_a),
        "subscribe key for A": {"headers": {"X-Api-Key": subscribe_a}},
        "user assigned A": {"login": user_a},
        "group member assigned A": {"login": member},
        "user assigned nothing": {"login": nobody},
        "staff": {"login": staff},
        "superuser": {"login": root},
    }


def perform(caller: dict, action: str):
    method, path, station = ACTIONS[action]
    client = Client(enforce_csrf_checks=True)
    if "login" in caller:
        client.force_login(caller["login"])
    headers = caller.get("headers", {})
    if method == "POST":
        return client.post(
            path, json.dumps(make_event(station)), content_type="application/json", headers=headers
        )
    response = client.get(path, headers=headers)
    if response.streaming:
        response.close()
    return response


@pytest.mark.parametrize("caller", list(MATRIX))
def test_each_caller_gets_exactly_the_access_it_was_given(callers, caller):
    got = {action: perform(callers[caller], action).status_code for action in ACTIONS}
    expected = dict(zip(ACTIONS, MATRIX[caller], strict=True))
    assert got == expected


def test_every_refusal_has_a_json_error_body(callers):
    for caller, expected in MATRIX.items():
        for action, status in zip(ACTIONS, expected, strict=True):
            if status in (401, 403) and action != "dashboard B":
                body = perform(callers[caller], action).json()
                assert body["error"] in ("unauthenticated", "forbidden"), (caller, action, body)
                assert body["message"]


def test_a_forbidden_station_looks_the_same_whether_it_exists_or_not(callers):
    caller = callers["subscribe key for A"]
    client = Client()
    existing = client.get("/api/sse/stations/ST003/", **_meta(caller))
    missing = client.get("/api/sse/stations/NOSUCH/", **_meta(caller))
    assert existing.status_code == missing.status_code == 403
    assert existing.json()["message"] == missing.json()["message"]

    ingest = callers["ingest key for A"]
    posted = client.post(
        "/api/event",
        json.dumps(make_event("NOSUCH", boxId=..., connectorId=...)),
        content_type="application/json",
        **_meta(ingest),
    )
    assert posted.status_code == 403


def _meta(caller):
    return {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in caller["headers"].items()}


def test_the_dashboard_offers_only_the_users_stations(callers):
    client = Client()
    client.force_login(callers["user assigned A"]["login"])
    page = client.get("/").content.decode()
    assert A in page
    assert B not in page


def test_a_revoked_key_is_refused_at_once(callers):
    key = ApiKey.objects.get(name="ingest A")
    headers = callers["ingest key for A"]["headers"]
    key.revoke()
    response = Client().post(
        "/api/event", json.dumps(make_event(A)), content_type="application/json", headers=headers
    )
    assert response.status_code == 401


def test_a_session_user_cannot_post_without_csrf_even_to_the_token_endpoint(callers):
    client = Client(enforce_csrf_checks=True)
    client.force_login(callers["user assigned A"]["login"])
    assert client.post("/api/stream-token").status_code == 403
