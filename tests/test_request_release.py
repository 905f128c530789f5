"""An answered request leaves nothing for the garbage collector (cgm/doors.py release).

Django's authentication middleware and a DRF view tie a request's objects into
reference cycles, which only Python's cyclic collector frees; under load the server's
collections then paused a worker for 100-200 ms every few seconds (docs/PERFORMANCE.md,
thirteenth session). Both doors let go of their requests once answered, so reference
counting frees everything at once. The ingest door's answers are made here through its
own function, with the collector off, and a collection then must find nothing. (The
stream door lets go of its request the same way, as it did before; tests/test_doors.py
and tests/test_e2e_stream.py cover its answers.)
"""

import gc
import json

import pytest

from access.models import ApiKey
from notifications.ingest import door as ingest_door
from tests.conftest import make_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def stations(django_db_setup, django_db_blocker):
    from django.core.management import call_command

    call_command("demo_data", stations=2, stdout=open("/dev/null", "w"))  # noqa: SIM115


def _ingest_scope(headers: dict[str, str]) -> dict:
    """The ASGI scope Daphne hands the ingest door for a POST."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/api/event",
        "root_path": "",
        "query_string": b"",
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


def _post(key: str, body: dict | list):
    raw = json.dumps(body).encode()
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Content-Length": str(len(raw)),
        "Host": "localhost",
    }
    request = ingest_door.django_request(_ingest_scope(headers), raw)
    return ingest_door.answer(request)


def test_an_ingest_answer_leaves_no_cycles():
    _, key = ApiKey.issue(name="ingest", scope="ingest", all_stations=True)

    def answer_each_kind():
        return [
            _post(key, make_event()).status_code,
            _post(key, [make_event(), make_event()]).status_code,  # a batch
            _post(key, make_event(stationId="NOPE")).status_code,  # DRF's 400
            _post("not-a-key", make_event()).status_code,  # DRF's 401
        ]

    answer_each_kind()  # first use of each path: caches, lazily built classes
    statuses = []

    def answer_many():
        for _ in range(3):
            statuses.extend(answer_each_kind())

    assert _garbage_left_by(answer_many) == 0
    assert statuses == [201, 201, 400, 401] * 3


def test_an_ingest_answer_keeps_what_is_sent():
    """release() runs before the door sends the answer: the answer must still be whole."""
    _, key = ApiKey.issue(name="ingest", scope="ingest", all_stations=True)
    event = make_event()
    response = _post(key, event)
    assert response.status_code == 201
    assert json.loads(response.content)["id"] == event["id"]
    assert response["Content-Type"] == "application/json"
