"""GET /api/notifications reads back every stored row, even one no ingest would take now."""

import io
import json

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from access.models import ApiKey
from notifications.ingest.services import notification_ingest
from notifications.ingest.validation import validate_events
from tests.conftest import make_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader():
    call_command("demo_data", stations=2, stdout=io.StringIO())
    _, key = ApiKey.issue(name="reader", scope=ApiKey.Scope.SUBSCRIBE, all_stations=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def store(**fields):
    events, errors = validate_events([make_event("ST001", **fields)], batch=False)
    assert not errors
    return notification_ingest(events=events)[0].notification


def test_a_legacy_row_with_a_lone_surrogate_reads_back_as_its_escape(reader):
    # Such rows could be stored before the ingest refused them (issue 10), on SQLite
    # only (PostgreSQL's jsonb never took them): write one directly, as an old database
    # would hold it.
    if connection.vendor != "sqlite":
        pytest.skip("only SQLite ever stored lone surrogates")
    row = store(message="ok")
    row.extra = {"x": "\ud800"}
    row.save(update_fields=["extra"])
    store(message="after it")

    response = reader.get("/api/notifications?station=ST001")

    assert response.status_code == 200
    body = json.loads(response.content)
    assert [item["message"] for item in body["results"]] == ["after it", "ok"]
    assert body["results"][1]["extra"] == {"x": "\ud800"}
    assert b"\\ud800" in response.content


def test_non_ascii_text_reads_back_unchanged(reader):
    store(message="充電槍過熱 überhitzt")
    response = reader.get("/api/notifications?station=ST001")
    assert json.loads(response.content)["results"][0]["message"] == "充電槍過熱 überhitzt"
