"""POST /api/event: validation, storage, idempotency and publish-after-commit."""

import json

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from notifications.ingest.services import notification_ingest
from notifications.ingest.validation import validate_events
from notifications.models import Notification
from stations.models import Station
from tests.conftest import make_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def stations(django_db_setup, django_db_blocker):
    from django.core.management import call_command

    call_command("demo_data", stations=3, stdout=open("/dev/null", "w"))  # noqa: SIM115


@pytest.fixture
def published(monkeypatch):
    """Every notification (channel, event type, data) handed to this process's streams
    (fault and status frames: tests/test_fault_lifecycle.py)."""
    from notifications.push.local import local_channels

    calls = []

    def record(events):
        calls.extend(
            (event.channel, event.type, json.loads(event.data))
            for event in events
            if event.type == "notification"
        )

    monkeypatch.setattr(local_channels, "deliver", record)
    return calls


@pytest.fixture
def ingest_key():
    from access.models import ApiKey

    _, key = ApiKey.issue(name="test ingest", scope="ingest", all_stations=True)
    return key


@pytest.fixture
def post(django_capture_on_commit_callbacks, ingest_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_key}")

    def do(body, raw=False, content_type="application/json"):
        with django_capture_on_commit_callbacks(execute=True):
            if raw:
                return client.generic("POST", "/api/event", body, content_type=content_type)
            return client.post("/api/event", body, format="json")

    return do


def test_it_stores_a_valid_event_and_answers_201_with_the_stored_row(post, published):
    event = make_event("ST002", boxId="ST002-B2", connectorId="2", code="E42", vendor="acme")

    response = post(event)

    assert response.status_code == 201
    body = response.json()
    assert body["id"] == event["id"]
    assert body["stationId"] == "ST002"
    assert body["boxId"] == "ST002-B2"
    assert body["connectorId"] == "2"
    assert body["faultType"] == "SYSTEM_ERROR"
    assert body["action"] == "SYSTEM_DATA_CHANGED"
    assert body["code"] == "E42"
    assert body["seq"] == 1
    assert body["extra"] == {"vendor": "acme"}
    assert body["receivedAt"].endswith("Z")
    row = Notification.objects.get(message_id=event["id"])
    assert row.station.code == "ST002" and row.connector.code == "2"
    assert row.payload == event
    assert published == [("ST002", "notification", body)]


def test_it_accepts_an_integer_connector_id_as_ocpp_sends_it(post, published):
    response = post(make_event(connectorId=2))
    assert response.status_code == 201
    assert response.json()["connectorId"] == "2"


def test_it_accepts_a_station_only_event(post, published):
    response = post(make_event(boxId=..., connectorId=...))
    assert response.status_code == 201
    assert response.json()["boxId"] is None and response.json()["connectorId"] is None


def test_it_answers_200_with_the_stored_row_when_the_id_repeats_and_publishes_once(post, published):
    event = make_event()
    first = post(event)
    again = post({**event, "message": "changed on retry"})

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Notification.objects.filter(message_id=event["id"]).count() == 1
    assert len(published) == 1
    # The notification and the fault it opened; the retry took no number.
    assert Station.objects.get(code="ST001").log_seq == 2


def test_it_stores_a_batch_in_one_go_with_contiguous_sequences_per_station(post, published):
    batch = [make_event("ST001"), make_event("ST002"), make_event("ST001"), make_event("ST001")]

    response = post(batch)

    assert response.status_code == 201
    body = response.json()
    assert [item["id"] for item in body] == [e["id"] for e in batch]
    assert [(item["stationId"], item["seq"]) for item in body] == [
        ("ST001", 1),
        ("ST002", 1),
        ("ST001", 2),
        ("ST001", 3),
    ]
    assert [p[2]["id"] for p in published] == [e["id"] for e in batch]
    # The notifications come first in the log, then their fault changes: ST001's
    # fault opened (4), then raised twice in the same transaction: one change (5).
    assert Station.objects.get(code="ST001").log_seq == 5


def test_a_batch_mixing_new_and_known_ids_stores_only_the_new_ones(post, published):
    known = make_event()
    post(known)
    published.clear()
    fresh = make_event()

    response = post([known, fresh])

    assert response.status_code == 201
    # 1 and 2 went to the known event and the fault it opened.
    assert [item["seq"] for item in response.json()] == [1, 3]
    assert [p[2]["id"] for p in published] == [fresh["id"]]


def test_a_batch_of_only_known_ids_answers_200(post, published):
    batch = [make_event(), make_event()]
    post(batch)
    assert post(batch).status_code == 200


BAD_EVENTS = [
    ("missing stationId", {"stationId": ...}, "stationId"),
    ("missing id", {"id": ...}, "id"),
    ("missing faultType", {"faultType": ...}, "faultType"),
    ("missing action", {"action": ...}, "action"),
    ("stationId as number", {"stationId": 1}, "stationId"),
    ("id as number", {"id": 7}, "id"),
    ("faultType as list", {"faultType": ["x"]}, "faultType"),
    ("connectorId as float", {"connectorId": 1.5}, "connectorId"),
    ("connectorId as bool", {"connectorId": True}, "connectorId"),
    ("message as object", {"message": {"a": 1}}, "message"),
    ("empty id", {"id": ""}, "id"),
    ("id too long", {"id": "x" * 129}, "id"),
    ("bad timestamp", {"timestamp": "yesterday"}, "timestamp"),
    ("unknown station", {"stationId": "NOPE", "boxId": ..., "connectorId": ...}, "stationId"),
    ("unknown box", {"boxId": "ST001-B9"}, "boxId"),
    ("box of another station", {"boxId": "ST002-B1"}, "boxId"),
    ("unknown connector", {"connectorId": "9"}, "connectorId"),
    ("connector without box", {"boxId": ...}, "connectorId"),
]


@pytest.mark.parametrize(("case", "change", "field"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_it_rejects_bad_input_with_400_naming_the_field(post, published, case, change, field):
    response = post(make_event(**change))

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["fields"], body
    assert Notification.objects.count() == 0
    assert published == []


def test_a_batch_with_one_bad_event_stores_nothing_and_names_the_index(post, published):
    batch = [make_event(), make_event(boxId="ST003-B1"), make_event()]

    response = post(batch)

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["[1].boxId"]
    assert Notification.objects.count() == 0
    assert published == []


def test_a_batch_repeating_an_id_is_rejected(post, published):
    event = make_event()
    response = post([event, dict(event)])
    assert response.status_code == 400
    assert "[1].id" in response.json()["fields"]


def test_it_rejects_a_body_that_is_not_json(post, published):
    response = post("{not json", raw=True)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert "body" in response.json()["fields"]


@pytest.mark.parametrize("body", ["42", '"text"', "null", "[1, 2]", "[]"])
def test_it_rejects_json_that_is_not_an_event_or_a_batch(post, published, body):
    response = post(body, raw=True)
    assert response.status_code == 400
    assert response.json()["fields"]
    assert Notification.objects.count() == 0


def test_it_answers_415_to_a_non_json_content_type(post, published):
    response = post("id=1", raw=True, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_it_answers_413_to_an_oversize_body(post, published, settings):
    settings.CGM_INGEST_MAX_BODY_BYTES = 1000
    response = post(make_event(message="x" * 2000))
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert Notification.objects.count() == 0


def test_it_answers_413_to_an_oversize_batch(post, published, settings):
    settings.CGM_INGEST_MAX_BATCH = 2
    response = post([make_event(), make_event(), make_event()])
    assert response.status_code == 413
    assert Notification.objects.count() == 0


def test_a_rolled_back_ingest_is_never_published_and_frees_its_sequence(
    published, django_capture_on_commit_callbacks
):
    events, errors = validate_events([make_event()], batch=False)
    assert not errors

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                notification_ingest(events=events)
                raise RuntimeError("something later in the request failed")

    assert callbacks == []
    assert published == []
    assert Notification.objects.count() == 0
    assert Station.objects.get(code="ST001").log_seq == 0


def test_publishing_waits_for_the_commit(published, django_capture_on_commit_callbacks):
    events, _ = validate_events([make_event()], batch=False)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        notification_ingest(events=events)
        assert published == []

    assert len(callbacks) == 1
    callbacks[0]()
    assert len(published) == 1


def test_a_failing_publish_does_not_undo_or_fail_the_ingest(monkeypatch, post):
    def broken(*args, **kwargs):
        raise ConnectionError("fan-out unavailable")

    from notifications.push.local import local_channels

    monkeypatch.setattr(local_channels, "deliver", broken)
    response = post(make_event())
    assert response.status_code == 201
    assert Notification.objects.count() == 1
