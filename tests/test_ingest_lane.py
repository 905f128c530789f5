"""The ASGI lane for API-key posts answers exactly as the DRF view does.

Every request below goes through both doors, the DRF view (Django's test client) and
the lane's `answer` (notifications/ingest_asgi.py), in the same database transaction.
Real Daphne runs of the lane are in the end-to-end tests, which post through it.
"""

import io
import json

import pytest
from django.core.management import call_command
from django.test import Client

from access.signing import sign_request
from access.throttle import ingest_limiter
from cgm.lanes import Headers
from notifications.ingest_asgi import answer, takes_lane
from notifications.models import Notification
from tests.conftest import make_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def equipment():
    call_command("demo_data", stations=3, stdout=io.StringIO())
    ingest_limiter.reset()


def create_key(*args) -> str:
    out = io.StringIO()
    call_command("createapikey", *args, stdout=out)
    return out.getvalue().strip()


@pytest.fixture
def keys():
    return {
        "ingest": create_key("all", "--scope", "ingest"),
        "ingest ST001": create_key("one", "--scope", "ingest", "--station", "ST001"),
        "subscribe": create_key("reader", "--scope", "subscribe"),
        "signed": create_key("signed", "--scope", "ingest", "--signed"),
    }


def via_django(headers: dict, body: bytes) -> tuple[int, dict, dict]:
    response = Client().generic(
        "POST",
        "/api/event",
        body,
        content_type=headers.pop("Content-Type", "application/json"),
        headers=headers,
    )
    return response.status_code, response.json(), dict(response.headers)


def via_lane(headers: dict, body: bytes | None) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json", **headers}
    reply = answer(Headers({k.lower(): v for k, v in headers.items()}), body)
    # Through JSON, as a client sees it (datetimes become strings).
    data = json.loads(json.dumps(reply.data, default=str))
    return reply.status, data, reply.headers


def both(headers: dict, body: bytes):
    return via_django(dict(headers), body), via_lane(dict(headers), body)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def dumps(value) -> bytes:
    return json.dumps(value).encode()


ERROR_CASES = {
    "wrong key": lambda k: (bearer("cgm_deadbeef_nope"), dumps(make_event())),
    "subscribe key": lambda k: (bearer(k["subscribe"]), dumps(make_event())),
    "foreign station": lambda k: (bearer(k["ingest ST001"]), dumps(make_event("ST002"))),
    "missing field": lambda k: (bearer(k["ingest"]), dumps(make_event(faultType=...))),
    "unknown box": lambda k: (bearer(k["ingest"]), dumps(make_event(boxId="NOPE"))),
    "number for a string": lambda k: (bearer(k["ingest"]), dumps(make_event(action=42))),
    "blank id": lambda k: (bearer(k["ingest"]), dumps(make_event(id="   "))),
    "bad timestamp": lambda k: (bearer(k["ingest"]), dumps(make_event(timestamp="yesterday"))),
    "bad batch item": lambda k: (
        bearer(k["ingest"]),
        dumps([make_event(), make_event(stationId="NOSUCH"), "x"]),
    ),
    "repeated id in batch": lambda k: (
        bearer(k["ingest"]),
        dumps([make_event(id="same"), make_event(id="same")]),
    ),
    "empty batch": lambda k: (bearer(k["ingest"]), b"[]"),
    "not an object": lambda k: (bearer(k["ingest"]), b"42"),
    "not json": lambda k: (bearer(k["ingest"]), b"{nope"),
    "NaN": lambda k: (bearer(k["ingest"]), b'{"id": NaN}'),
    "empty body": lambda k: (bearer(k["ingest"]), b""),
    "text/plain": lambda k: ({**bearer(k["ingest"]), "Content-Type": "text/plain"}, b"hello"),
    "unsigned body for a signed key": lambda k: (bearer(k["signed"]), dumps(make_event())),
    "X-Api-Key, wrong": lambda k: ({"X-Api-Key": "cgm_dead_beef"}, dumps(make_event())),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_errors_are_the_same_through_both_doors(keys, case):
    headers, body = ERROR_CASES[case](keys)
    (status, data, django_headers), (lane_status, lane_data, lane_headers) = both(headers, body)

    assert status >= 400
    assert (lane_status, lane_data) == (status, data)
    if status == 401:
        assert lane_headers["WWW-Authenticate"] == django_headers["WWW-Authenticate"]
    assert Notification.objects.count() == 0


def test_an_oversize_body_is_413_through_both_doors(keys, settings):
    settings.CGM_INGEST_MAX_BODY_BYTES = 1000
    body = dumps(make_event(message="x" * 2000))
    status, data, _ = via_django(bearer(keys["ingest"]), body)
    # The lane stops reading at the limit and hands over None.
    lane_status, lane_data, _ = via_lane(bearer(keys["ingest"]), None)
    assert (lane_status, lane_data) == (status, data) == (413, data)
    assert data["error"] == "too_large"


def test_a_stored_event_answers_the_same_through_both_doors(keys):
    event = make_event(timestamp="2026-11-23T08:00:00+08:00", extraField={"a": 1})
    first = via_lane(bearer(keys["ingest"]), dumps(event))
    again_by_django = via_django(bearer(keys["ingest"]), dumps(event))
    again_by_lane = via_lane(bearer(keys["ingest"]), dumps(event))

    assert first[0] == 201
    assert first[1]["timestamp"] == "2026-11-23T00:00:00Z"
    assert first[1]["extra"] == {"extraField": {"a": 1}}
    # A repeated id: 200 and the row as first stored, whichever door.
    assert again_by_django[:2] == again_by_lane[:2] == (200, first[1])
    assert Notification.objects.count() == 1


def test_a_batch_through_the_lane_is_stored_in_order(keys):
    events = [make_event("ST001"), make_event("ST002"), make_event("ST001")]
    status, data, _ = via_lane(bearer(keys["ingest"]), dumps(events))
    assert status == 201
    assert [d["id"] for d in data] == [e["id"] for e in events]
    assert [d["seq"] for d in data] == [1, 1, 2]


def test_a_signed_key_posts_through_the_lane_only_with_a_good_signature(keys):
    body = dumps(make_event())
    good = via_lane({**bearer(keys["signed"]), **sign_request(keys["signed"], body)}, body)
    tampered = via_lane(
        {**bearer(keys["signed"]), **sign_request(keys["signed"], body)}, body + b" "
    )
    assert good[0] == 201
    assert tampered[0] == 401


def test_the_lane_throttles_per_key_with_retry_after(keys, settings):
    settings.CGM_INGEST_RATE = "3/m"
    statuses = [via_lane(bearer(keys["ingest"]), dumps(make_event()))[0] for _ in range(4)]
    limited = via_lane(bearer(keys["ingest"]), dumps(make_event()))
    other = via_lane(bearer(keys["ingest ST001"]), dumps(make_event()))

    assert statuses == [201, 201, 201, 429]
    assert limited[1]["error"] == "throttled"
    assert int(limited[2]["Retry-After"]) > 0
    assert other[0] == 201
    # Django's door counts against the same budget.
    assert via_django(bearer(keys["ingest"]), dumps(make_event()))[0] == 429


def scope(method="POST", path="/api/event", scheme="http", **headers):
    headers.setdefault("host", "127.0.0.1:8000")
    return {
        "type": "http",
        "method": method,
        "path": path,
        "scheme": scheme,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


def test_only_plain_api_key_posts_take_the_lane(settings):
    settings.SECURE_SSL_REDIRECT = False
    key = {"authorization": "Bearer cgm_abc_def"}
    assert takes_lane(scope(**key))
    assert takes_lane(scope(path="/api/event/", x_api_key="cgm_abc_def"))
    # Everything else is Django's: other methods, sessions, browsers (CORS), odd hosts.
    assert not takes_lane(scope(method="OPTIONS", **key))
    assert not takes_lane(scope())
    assert not takes_lane(scope(origin="https://ops.example", **key))
    assert not takes_lane(scope(host="evil.example", **key))
    assert not takes_lane(scope(path="/api/notifications", **key))


def test_plain_http_posts_go_to_django_when_tls_is_required(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = None
    key = {"authorization": "Bearer cgm_abc_def"}
    assert not takes_lane(scope(**key))
    assert takes_lane(scope(scheme="https", **key))
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert takes_lane(scope(x_forwarded_proto="https", **key))
    assert not takes_lane(scope(scheme="https", **key))


def test_a_body_cut_short_by_a_disconnect_is_never_stored(keys):
    import asyncio

    from asgiref.testing import ApplicationCommunicator

    from notifications.ingest_asgi import ingest_app

    body = dumps([make_event(), make_event()])
    request = scope(authorization=f"Bearer {keys['ingest']}", content_type="application/json")

    async def scenario():
        app = ApplicationCommunicator(ingest_app, request)
        # Half a batch, then the sender is gone.
        await app.send_input({"type": "http.request", "body": body[:40], "more_body": True})
        await app.send_input({"type": "http.disconnect"})
        await app.wait(timeout=5)
        return await app.receive_nothing()

    assert asyncio.run(scenario())  # no answer was sent
    assert Notification.objects.count() == 0
