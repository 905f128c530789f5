"""An answered request leaves nothing for the garbage collector (cgm/doors.py release).

Django's authentication middleware and a DRF view tie a request's objects into
reference cycles, which only Python's cyclic collector frees; under load the server's
collections then paused a worker for 100-200 ms every few seconds (docs/PERFORMANCE.md,
thirteenth session). Both doors let go of their requests once answered, so reference
counting frees everything at once. Each test answers requests through a door's own
function, with the collector off, and counts what a collection then finds.
"""

import gc
import json

import pytest

from access.models import ApiKey
from notifications.ingest import door as ingest_door
from notifications.streams import door as stream_door
from tests.conftest import make_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def stations(django_db_setup, django_db_blocker):
    from django.core.management import call_command

    call_command("demo_data", stations=2, stdout=open("/dev/null", "w"))  # noqa: SIM115


def _scope(method: str, path: str, headers: dict[str, str], query: str = "") -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def _garbage_left_by(answer_many) -> int:
    """How many objects a collection finds after `answer_many()`, which must leave no
    reference of its own to what it made."""
    gc.collect()
    gc.disable()
    try:
        answer_many()
        return gc.collect()
    finally:
        gc.enable()


def _post(key: str, body: dict):
    raw = json.dumps(body).encode()
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Content-Length": str(len(raw)),
        "Host": "localhost",
    }
    request = ingest_door.django_request(_scope("POST", "/api/event", headers), raw)
    return ingest_door.answer(request)


def test_an_ingest_answer_leaves_no_cycles():
    _, key = ApiKey.issue(name="ingest", scope="ingest", all_stations=True)
    _post(key, make_event())  # first use: caches, lazily built classes
    statuses = []

    def answer_many():
        for _ in range(5):
            statuses.append(_post(key, make_event()).status_code)
        statuses.append(_post(key, make_event(stationId="NOPE")).status_code)  # DRF's 400
        statuses.append(_post("not-a-key", make_event()).status_code)  # DRF's 401

    assert _garbage_left_by(answer_many) == 0
    assert statuses == [201] * 5 + [400, 401]


def test_an_ingest_answer_keeps_what_is_sent():
    """release() runs before the door sends the answer: the answer must still be whole."""
    _, key = ApiKey.issue(name="ingest", scope="ingest", all_stations=True)
    event = make_event()
    response = _post(key, event)
    assert response.status_code == 201
    assert json.loads(response.content)["id"] == event["id"]
    assert response["Content-Type"] == "application/json"


def _open(headers: dict[str, str], path="/api/sse/stations/ST001/"):
    request = stream_door.django_request(_scope("GET", path, {"Host": "localhost", **headers}))
    return stream_door.open_on_db_thread(request)


def test_a_refused_stream_open_leaves_no_cycles():
    _, reader = ApiKey.issue(name="reader", scope="subscribe", all_stations=True)
    _open({})  # first use
    statuses = []

    def answer_many():
        for headers, path in (
            ({}, "/api/sse/stations/ST001/"),  # no credentials: 401
            ({"Authorization": "Bearer not-a-key"}, "/api/sse/stations/ST001/"),  # 401
            ({"Authorization": f"Bearer {reader}"}, "/api/sse/stations/NOPE/"),  # 404
        ):
            statuses.append(_open(headers, path).status_code)

    assert _garbage_left_by(answer_many) == 0
    assert statuses == [401, 401, 404]
