"""The stream lane (notifications/stream_asgi.py) serves what Django served, and lets go.

A request with an Origin header takes Django's full stack (CORS); the same request
without one takes the lane. Both are compared on a real Daphne; the clean-up after a
client leaves is checked in-process against the real ASGI application.
"""

import asyncio
import io

import httpx
import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.management import call_command

from notifications.stream_asgi import takes_lane
from tests.conftest import make_event
from tests.sse import SSEStream

ELSEWHERE = {"Origin": "https://not-listed.example"}  # forces Django's stack


def scope(method="GET", path="/api/sse/stations/ST001/", **headers):
    headers.setdefault("host", "127.0.0.1:8000")
    return {
        "type": "http",
        "method": method,
        "path": path,
        "scheme": "http",
        "query_string": b"",
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


def test_only_plain_stream_requests_take_the_lane(settings):
    settings.SECURE_SSL_REDIRECT = False
    assert takes_lane(scope())
    assert takes_lane(scope(path="/api/sse/"))
    assert not takes_lane(scope(origin="https://ops.example"))  # CORS: Django
    assert not takes_lane(scope(method="POST"))
    assert not takes_lane(scope(method="HEAD"))
    assert not takes_lane(scope(path="/api/sse/elsewhere/x"))  # not the stream view
    assert not takes_lane(scope(host="evil.example"))


@pytest.mark.e2e
def test_both_doors_open_the_same_stream_and_deliver_the_same_frames(server):
    by_lane = SSEStream(f"{server.url}/api/sse/stations/ST001/", headers=server.reader_headers)
    by_django = SSEStream(
        f"{server.url}/api/sse/stations/ST001/", headers={**server.reader_headers, **ELSEWHERE}
    )
    try:
        openings = [stream.next_of("stream-open") for stream in (by_lane, by_django)]
        assert openings[0].id == openings[1].id == "ST001:0"
        for name in ("content-type", "cache-control", "x-accel-buffering"):
            assert by_lane.response_headers[name] == by_django.response_headers[name]
        assert by_lane.response_headers["x-content-type-options"] == "nosniff"

        event = make_event("ST001")
        assert server.post(event).status_code == 201
        received = [stream.next_of("notification") for stream in (by_lane, by_django)]
        assert received[0].id == received[1].id == "ST001:1"
        assert received[0].data == received[1].data
        assert received[0].json()["id"] == event["id"]
    finally:
        by_lane.close()
        by_django.close()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "path, headers_of, status",
    [
        ("/api/sse/stations/NOPE/", "reader", 404),
        ("/api/sse/", "reader", 400),
        ("/api/sse/stations/ST001/", None, 401),
        ("/api/sse/stations/ST001/?token=forged", None, 401),
    ],
)
def test_refusals_are_the_same_through_both_doors(server, path, headers_of, status):
    headers = server.reader_headers if headers_of == "reader" else {}
    lane = httpx.get(server.url + path, headers=headers)
    django = httpx.get(server.url + path, headers={**headers, **ELSEWHERE})
    assert lane.status_code == django.status_code == status
    assert lane.json() == django.json()
    assert lane.headers.get("www-authenticate") == django.headers.get("www-authenticate")
    assert lane.headers["content-length"] == str(len(lane.content))


@pytest.fixture
def subscribe_key(transactional_db):
    call_command("demo_data", stations=2, stdout=io.StringIO())
    out = io.StringIO()
    call_command("createapikey", "reader", "--scope", "subscribe", stdout=out)
    return out.getvalue().strip()


def test_a_stream_that_the_client_leaves_is_unregistered_at_once(subscribe_key):
    from django_eventstream.views import get_listener_manager

    from cgm.asgi import application

    manager = get_listener_manager()

    async def scenario():
        request = scope(authorization=f"Bearer {subscribe_key}")
        request["path"] = "/api/sse/stations/ST002/"
        app = ApplicationCommunicator(application, request)
        await app.send_input({"type": "http.request", "body": b""})
        start = await app.receive_output(timeout=10)
        opening = await app.receive_output(timeout=10)
        listening = len(manager.listeners_by_channel.get("ST002", ()))

        await app.send_input({"type": "http.disconnect"})
        await app.wait(timeout=5)  # the application returns: nothing left running
        return start, opening, listening, len(manager.listeners_by_channel.get("ST002", ()))

    start, opening, listening, after = asyncio.run(scenario())
    assert start["status"] == 200
    assert b"event: stream-open" in opening["body"]
    assert listening == 1
    assert after == 0


def test_a_database_failure_at_open_is_a_503_not_a_crash(subscribe_key, monkeypatch):
    from django.db import OperationalError
    from django.test import Client

    def database_down(fn, args):
        raise OperationalError("connection refused")

    monkeypatch.setattr("cgm.db_pool._call", database_down)
    response = Client().get(
        "/api/sse/stations/ST001/", headers={"Authorization": f"Bearer {subscribe_key}"}
    )
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["error"] == "unavailable"
