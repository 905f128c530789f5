"""The ingest's validation takes common strings, and skips absent optional fields,
without running DRF's fields (notifications/ingest/validation.py, _check_event); every
answer must still be DRF's own."""

import io

import pytest
from django.core.management import call_command

from notifications.ingest.validation import Equipment, EventSerializer, validate_events
from tests.conftest import make_event

pytestmark = pytest.mark.django_db

TRICKY = [
    "plain",
    " padded ",
    "tab\t",
    "",
    "   ",
    "nul\x00inside",
    "surrogate \ud800",
    "ünïcödé ok",
    "x" * 64,
    "x" * 65,
    "y" * 129,
    None,
    42,
    True,
    4.5,
    ["a"],
]


@pytest.fixture(autouse=True)
def equipment():
    call_command("demo_data", stations=2, stdout=io.StringIO())


def values(event) -> tuple:
    return (
        event.message_id, event.station, event.box, event.connector, event.fault_type,
        event.action, event.message, event.code, event.occurred_at, event.extra,
    )  # fmt: skip


def drf_answer(raw: dict):
    serializer = EventSerializer(data=raw, context={"equipment": Equipment([raw])})
    if serializer.is_valid():
        return "valid", values(serializer.validated_data)
    errors = serializer.errors
    return "invalid", {name: [str(m) for m in messages] for name, messages in errors.items()}


def our_answer(raw: dict):
    events, errors = validate_events([raw], batch=False)
    return ("valid", values(events[0])) if events else ("invalid", errors)


@pytest.mark.parametrize("field", ["id", "faultType", "action", "message", "code"])
@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_each_value_gets_drfs_own_answer(field, value):
    raw = make_event(**{field: value})
    assert our_answer(raw) == drf_answer(raw)


ALL_FIELDS = list(EventSerializer().fields)


@pytest.mark.parametrize("field", ALL_FIELDS)
def test_an_absent_field_gets_drfs_own_answer(field):
    # An absent optional field is skipped without running it, as DRF skips it; an
    # absent required one must still be DRF's "This field is required."
    raw = make_event(code="E1", timestamp="2026-11-30T07:00:00Z")
    raw.pop(field, None)
    if field == "boxId":
        raw.pop("connectorId")  # a connector needs its box: that error is another test's
    assert our_answer(raw) == drf_answer(raw)
