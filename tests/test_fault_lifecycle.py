"""The fault lifecycle and live status, as a specification (docs/FAULTS.md).

Events go through the real ingest (POST /api/event, DRF, the ingest services); what
they do to faults, statuses and the station log is read back from the API and from
the frames handed to the streams.
"""

import json

import pytest
from django.core.management import call_command
from django.db import connection

from faults.models import EventRule, Fault, SeverityRule
from notifications.models import LogEntry, Notification
from stations.models import Station
from tests.conftest import key_client, make_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def stations():
    call_command("demo_data", stations=3, stdout=open("/dev/null", "w"))  # noqa: SIM115


@pytest.fixture
def frames(monkeypatch):
    """Every frame handed to this process's streams: (station, event, seq, data)."""
    from notifications.push.local import local_channels

    calls = []

    def record(events):
        calls.extend((e.channel, e.type, e.id, json.loads(e.data)) for e in events)

    monkeypatch.setattr(local_channels, "deliver", record)
    return calls


@pytest.fixture
def post(django_capture_on_commit_callbacks):
    client = key_client("ingest", all_stations=True)

    def do(*events):
        body = list(events) if len(events) > 1 else events[0]
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/api/event", body, format="json")
        assert response.status_code in (200, 201), response.content
        return response.json()

    return do


@pytest.fixture
def reader():
    return key_client("subscribe", all_stations=True)


@pytest.fixture
def operator(django_capture_on_commit_callbacks):
    client = key_client("operate", all_stations=True)

    def do(fault_id, action, body=None):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(f"/api/faults/{fault_id}/{action}", body, format="json")

    return do


def state(reader, station="ST001") -> dict:
    response = reader.get(f"/api/stations/{station}/state")
    assert response.status_code == 200, response.content
    return response.json()


def only_fault(reader, station="ST001") -> dict:
    faults = state(reader, station)["faults"]
    assert len(faults) == 1, faults
    return faults[0]


def station_log(code="ST001") -> list[tuple[int, str]]:
    """The station's log as stored: its notifications and its changes, by number."""
    notifications = Notification.objects.filter(station__code=code).values_list("seq", flat=True)
    changes = LogEntry.objects.filter(station__code=code).values_list("seq", "kind")
    return sorted([(seq, "notification") for seq in notifications] + list(changes))


def fault_event(**fields):
    return make_event("ST001", **{"faultType": "ConnectorLockFailure", "code": "E7", **fields})


# --- opening, raising, clearing, reopening


def test_a_first_event_opens_a_fault_with_its_key_and_mapped_severity(post, reader, frames):
    event = fault_event(timestamp="2026-11-28T10:00:00Z")
    stored = post(event)

    fault = only_fault(reader)
    assert fault["id"].isdigit()
    assert (fault["stationId"], fault["boxId"], fault["connectorId"]) == ("ST001", "ST001-B1", "1")
    assert (fault["faultType"], fault["code"]) == ("ConnectorLockFailure", "E7")
    assert fault["severity"] == "error"  # OCPP's ConnectorLockFailure, default mapping
    assert fault["state"] == "open"
    assert fault["occurrences"] == 1
    assert fault["firstSeen"] == fault["lastSeen"] == "2026-11-28T10:00:00Z"
    assert fault["acknowledgedBy"] is None and fault["resolvedBy"] is None
    # The notification first, then the fault, numbered in the station's log.
    assert [(kind, seq) for _, kind, seq, _ in frames] == [("notification", 1), ("fault", 2)]
    assert stored["seq"] == 1
    assert frames[1][3] == fault


def test_a_repeat_raises_occurrences_and_last_seen(post, reader, frames):
    post(fault_event(timestamp="2026-11-28T10:00:00Z"))
    post(fault_event(timestamp="2026-11-28T10:05:00Z"))
    post(fault_event(timestamp="2026-11-28T10:09:00Z"))

    fault = only_fault(reader)
    assert fault["occurrences"] == 3
    assert fault["firstSeen"] == "2026-11-28T10:00:00Z"
    assert fault["lastSeen"] == "2026-11-28T10:09:00Z"
    assert Fault.objects.count() == 1
    pushed = [data["occurrences"] for _, kind, _, data in frames if kind == "fault"]
    assert pushed == [1, 2, 3]


def test_different_keys_are_different_faults(post, reader):
    post(fault_event())
    post(fault_event(code="E8"))
    post(fault_event(connectorId="2"))
    post(
        make_event("ST001", boxId=..., connectorId=..., faultType="ConnectorLockFailure", code="E7")
    )
    assert len(state(reader)["faults"]) == 4


def test_a_cleared_event_resolves_the_fault_and_opens_nothing(post, reader, frames):
    post(fault_event())
    fault_id = only_fault(reader)["id"]
    clearing = fault_event(cleared=True)
    post(clearing)

    assert state(reader)["faults"] == []
    resolved = reader.get(f"/api/faults/{fault_id}").json()
    assert resolved["state"] == "resolved"
    assert resolved["resolvedBy"] == f"event:{clearing['id']}"
    assert resolved["resolvedAt"] is not None
    assert frames[-1][1] == "fault" and frames[-1][3]["state"] == "resolved"
    assert Fault.objects.count() == 1


def test_action_fault_cleared_resolves_too(post, reader):
    post(fault_event())
    post(fault_event(action="FAULT_CLEARED"))
    assert state(reader)["faults"] == []


def test_a_clear_without_an_open_fault_changes_nothing(post, reader, frames):
    post(fault_event(cleared=True))
    assert state(reader)["faults"] == []
    assert Fault.objects.count() == 0
    assert [kind for _, kind, _, _ in frames] == ["notification"]


def test_firing_after_a_clear_opens_a_new_fault_and_keeps_the_old_one(post, reader):
    post(fault_event())
    first = only_fault(reader)["id"]
    post(fault_event(cleared=True))
    post(fault_event())

    second = only_fault(reader)
    assert second["id"] != first
    assert second["occurrences"] == 1 and second["state"] == "open"
    assert reader.get(f"/api/faults/{first}").json()["state"] == "resolved"


def test_open_clear_and_reopen_in_one_batch(post, reader, frames):
    post(fault_event(), fault_event(cleared=True), fault_event())

    assert Fault.objects.filter(state="resolved").count() == 1
    assert only_fault(reader)["occurrences"] == 1
    kinds = [(kind, data.get("state")) for _, kind, _, data in frames]
    assert kinds == [
        ("notification", None),
        ("notification", None),
        ("notification", None),
        ("fault", "open"),
        ("fault", "resolved"),
        ("fault", "open"),
    ]
    assert [seq for _, _, seq, _ in frames] == [1, 2, 3, 4, 5, 6]


def test_a_stored_fault_cleared_and_fired_again_in_one_batch(post, reader, frames):
    # The stored fault's update (resolved) must be written before its successor is
    # inserted: the unique index allows one unresolved fault per key.
    post(fault_event(), fault_event())
    post(fault_event(cleared=True), fault_event())

    resolved = Fault.objects.get(state="resolved")
    assert resolved.occurrences == 2
    assert only_fault(reader)["occurrences"] == 1
    assert only_fault(reader)["id"] != str(resolved.pk)
    assert [(kind, data.get("state")) for _, kind, _, data in frames][-2:] == [
        ("fault", "resolved"),
        ("fault", "open"),
    ]


@pytest.mark.parametrize("fault_type", ["GENERAL", "GENERAL_NOTICE", "INFO", "NO_ERROR", "NoError"])
def test_notices_open_nothing(post, reader, frames, fault_type):
    post(make_event("ST001", faultType=fault_type, action="GENERAL"))
    assert state(reader)["faults"] == []
    assert [kind for _, kind, _, _ in frames] == ["notification"]


def test_a_notice_does_not_raise_an_open_fault_of_another_type(post, reader):
    post(fault_event())
    post(make_event("ST001", faultType="GENERAL"))
    assert only_fault(reader)["occurrences"] == 1


# --- out-of-order device times


def test_an_older_event_raises_occurrences_but_never_moves_last_seen_back(post, reader):
    post(fault_event(timestamp="2026-11-28T10:05:00Z"))
    post(fault_event(timestamp="2026-11-28T10:01:00Z"))
    fault = only_fault(reader)
    assert fault["occurrences"] == 2
    assert fault["lastSeen"] == "2026-11-28T10:05:00Z"
    assert fault["firstSeen"] == "2026-11-28T10:01:00Z"


def test_a_clear_older_than_the_latest_firing_is_stale_and_resolves_nothing(post, reader):
    post(fault_event(timestamp="2026-11-28T10:05:00Z"))
    post(fault_event(timestamp="2026-11-28T10:00:00Z", cleared=True))
    assert only_fault(reader)["state"] == "open"
    post(fault_event(timestamp="2026-11-28T10:06:00Z", cleared=True))
    assert state(reader)["faults"] == []


# --- severity


def test_an_event_may_carry_its_own_severity(post, reader):
    post(fault_event(severity="critical"))
    assert only_fault(reader)["severity"] == "critical"


def test_unmapped_fault_types_are_errors(post, reader):
    post(make_event("ST001", faultType="SOMETHING_NEW"))
    assert only_fault(reader)["severity"] == "error"


def test_severity_matches_fault_types_across_spellings(post, reader):
    post(make_event("ST001", faultType="GROUND_FAILURE"))  # OCPP's GroundFailure
    assert only_fault(reader)["severity"] == "critical"


def test_an_edited_severity_mapping_applies_to_faults_opened_afterwards(post, reader):
    post(fault_event())
    SeverityRule.objects.filter(fault_type="ConnectorLockFailure").update(severity="warning")
    SeverityRule.objects.create(fault_type="ConnectorLockFailure", code="E9", severity="critical")
    from faults.rules import forget_rules

    forget_rules()  # what the admin's save does (a signal); .update() sends none
    post(fault_event(code="E8"))
    post(fault_event(code="E9"))

    by_code = {f["code"]: f["severity"] for f in state(reader)["faults"]}
    assert by_code == {"E7": "error", "E8": "warning", "E9": "critical"}


def test_saving_a_rule_is_seen_by_the_next_event(post, reader):
    post(make_event("ST001", faultType="GENERAL"))
    rule = EventRule.objects.get(fault_type="GENERAL")
    rule.enabled = False
    rule.save()  # the admin's save: the cached rules are dropped at once
    post(make_event("ST001", faultType="GENERAL"))
    assert only_fault(reader)["faultType"] == "GENERAL"


def test_the_status_available_rule_is_off_by_default_and_clears_when_enabled(post, reader):
    post(fault_event())
    post(make_event("ST001", faultType="GENERAL", status="Available"))
    assert only_fault(reader)["state"] == "open"

    rule = EventRule.objects.get(status="Available")
    rule.enabled = True
    rule.save()
    # The rule clears the fault of the reporting event's key.
    post(fault_event(status="Available"))
    assert state(reader)["faults"] == []


# --- status


def test_a_status_sets_the_connector_and_is_pushed(post, reader, frames):
    post(make_event("ST001", faultType="GENERAL", status="Charging",
                    timestamp="2026-11-28T10:00:00Z"))  # fmt: skip
    connectors = {(c["boxId"], c["connectorId"]): c for c in state(reader)["connectors"]}
    assert connectors[("ST001-B1", "1")]["status"] == "Charging"
    assert connectors[("ST001-B1", "1")]["since"] == "2026-11-28T10:00:00Z"
    assert connectors[("ST001-B1", "2")]["status"] is None  # registered, never reported
    assert [kind for _, kind, _, _ in frames] == ["notification", "status"]
    assert frames[1][3] == connectors[("ST001-B1", "1")]


def test_an_older_status_never_rolls_the_newer_back(post, reader, frames):
    post(make_event("ST001", faultType="GENERAL", status="Faulted",
                    timestamp="2026-11-28T10:05:00Z"))  # fmt: skip
    post(make_event("ST001", faultType="GENERAL", status="Available",
                    timestamp="2026-11-28T10:00:00Z"))  # fmt: skip
    connector = state(reader)["connectors"][0]
    assert (connector["status"], connector["since"]) == ("Faulted", "2026-11-28T10:05:00Z")
    assert [kind for _, kind, _, _ in frames].count("status") == 1


def test_the_same_status_again_is_no_change(post, frames):
    post(make_event("ST001", faultType="GENERAL", status="Charging"))
    post(make_event("ST001", faultType="GENERAL", status="Charging"))
    assert [kind for _, kind, _, _ in frames].count("status") == 1


def test_a_box_event_sets_the_box_status_and_last_seen(post, reader, frames):
    post(make_event("ST001", connectorId=..., faultType="GENERAL", status="Unavailable"))
    boxes = {b["boxId"]: b for b in state(reader)["boxes"]}
    assert boxes["ST001-B1"]["status"] == "Unavailable"
    assert boxes["ST001-B1"]["lastSeen"] is not None
    assert boxes["ST001-B2"] == {
        "stationId": "ST001", "boxId": "ST001-B2", "status": None, "lastSeen": None,
    }  # fmt: skip
    assert [kind for _, kind, _, _ in frames] == ["notification", "status"]


def test_last_seen_alone_is_not_pushed(post, reader, frames):
    post(make_event("ST001", faultType="GENERAL"))
    assert state(reader)["boxes"][0]["lastSeen"] is not None
    assert [kind for _, kind, _, _ in frames] == ["notification"]


def test_the_notification_then_status_then_fault(post, frames):
    post(fault_event(status="Faulted"))
    assert [(kind, seq) for _, kind, seq, _ in frames] == [
        ("notification", 1),
        ("status", 2),
        ("fault", 3),
    ]


def test_a_bad_severity_status_or_cleared_is_a_400_naming_the_field():
    client = key_client("ingest", all_stations=True)
    for field, value in [("severity", "urgent"), ("status", "Broken"), ("cleared", "yes")]:
        response = client.post("/api/event", fault_event(**{field: value}), format="json")
        assert response.status_code == 400
        assert field in response.json()["fields"]
    assert Fault.objects.count() == 0
    assert LogEntry.objects.count() == 0


# --- the log


def test_every_change_is_a_log_entry_and_the_station_counter_matches(post):
    post(fault_event(status="Faulted"), fault_event(), fault_event(cleared=True))
    assert station_log() == [
        (1, "notification"),
        (2, "notification"),
        (3, "notification"),
        (4, "status"),
        (5, "fault"),
        (6, "fault"),
        (7, "fault"),
    ]
    assert Station.objects.get(code="ST001").log_seq == 7


def test_a_box_offline_fault_is_resolved_by_its_next_event_as_system(post, reader):
    station = Station.objects.get(code="ST001")
    box = station.boxes.get(code="ST001-B1")
    from django.utils import timezone

    now = timezone.now()
    offline = Fault.objects.create(
        station=station, box=box, fault_type="OFFLINE", severity="error",
        first_seen=now, last_seen=now,
    )  # fmt: skip
    post(make_event("ST001", faultType="GENERAL"))
    offline.refresh_from_db()
    assert (offline.state, offline.resolved_by) == ("resolved", "system")


# --- the admin


def test_the_admin_lists_faults_and_acknowledges_and_resolves_them_in_bulk(
    post, frames, admin_client, django_capture_on_commit_callbacks
):
    post(fault_event(), fault_event(code="E8"), fault_event(code="E9"))
    faults = list(Fault.objects.order_by("code"))
    listing = admin_client.get("/admin/faults/fault/?state__exact=open")
    assert listing.status_code == 200
    for fault in faults:
        assert f"/admin/faults/fault/{fault.pk}/change/" in listing.content.decode()
    frames.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/faults/fault/",
            {"action": "acknowledged_selected", "_selected_action": [faults[0].pk, faults[1].pk]},
        )
    assert response.status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/faults/fault/",
            {"action": "resolved_selected", "_selected_action": [faults[1].pk]},
        )

    states = dict(Fault.objects.values_list("code", "state"))
    assert states == {"E7": "acknowledged", "E8": "resolved", "E9": "open"}
    assert Fault.objects.get(code="E7").acknowledged_by == "admin"
    assert Fault.objects.get(code="E8").resolved_by == "admin"
    # Pushed like any operator's action, each with the station's next number.
    pushed = [(data["code"], data["state"]) for _, kind, _, data in frames if kind == "fault"]
    assert sorted(pushed[:2]) == [("E7", "acknowledged"), ("E8", "acknowledged")]
    assert pushed[2] == ("E8", "resolved")
    assert [seq for _, _, seq, _ in frames] == [7, 8, 9]
    detail = admin_client.get(f"/admin/faults/fault/{faults[0].pk}/change/")
    assert detail.status_code == 200 and "acknowledged" in detail.content.decode()


def test_rules_and_severities_are_edited_in_the_admin(admin_client):
    assert admin_client.get("/admin/faults/eventrule/").status_code == 200
    assert admin_client.get("/admin/faults/severityrule/").status_code == 200
    response = admin_client.post(
        "/admin/faults/severityrule/add/",
        {"fault_type": "BATTERY_SMOKE", "code": "", "severity": "critical"},
    )
    assert response.status_code == 302
    assert SeverityRule.objects.get(fault_type="BATTERY_SMOKE").severity == "critical"


def test_raises_in_one_transaction_are_one_change_with_the_count_at_commit(post, frames):
    """A batch (or a group commit) repeating a fault: one fault frame and log row for
    its raises, after its opening; a resolve after raises still shows them first."""
    post(fault_event(), fault_event(), fault_event())
    pushed = [(d["state"], d["occurrences"]) for _, kind, _, d in frames if kind == "fault"]
    assert pushed == [("open", 1), ("open", 3)]
    frames.clear()

    post(fault_event(), fault_event(), fault_event(cleared=True), fault_event())
    pushed = [(d["state"], d["occurrences"]) for _, kind, _, d in frames if kind == "fault"]
    assert pushed == [("open", 5), ("resolved", 5), ("open", 1)]
    # Every entry numbered without a hole: 3 + 2, then 4 + 3.
    assert [seq for seq, _ in station_log()] == list(range(1, 13))


@pytest.mark.parametrize("page", [1, 2, 3, 50])
def test_the_log_reads_back_page_by_page_in_order_across_both_tables(post, page):
    """Replay (resume, Pushpin's recovery) reads the two tables of the log by page:
    whatever the page size, every entry once, in each station's order."""
    from notifications.log import log_entries_after

    post(fault_event(status="Faulted"), fault_event(), make_event("ST002"), fault_event())
    post(fault_event(cleared=True, status="Available"), make_event("ST002", status="Charging"))
    stations = {code: Station.objects.get(code=code) for code in ("ST001", "ST002")}
    position = {s.pk: (code, 0) for code, s in stations.items()}
    read = []
    while True:
        items = log_entries_after(position, page)
        for item in items:
            station_id = stations[item.station_code].pk
            assert item.seq == position[station_id][1] + 1, (item, position)
            position[station_id] = (item.station_code, item.seq)
            read.append((item.station_code, item.seq, item.kind))
        if len(items) < page:
            break
    for code, station in stations.items():
        station.refresh_from_db()
        kinds = [kind for c, _, kind in read if c == code]
        assert [(seq, kind) for c, seq, kind in read if c == code] == station_log(code)
        assert len(kinds) == station.log_seq


# --- what a raise costs the database


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="PostgreSQL's heap-only updates: runs in the PostgreSQL pass of make test",
)
def test_raising_a_fault_is_a_heap_only_update_on_postgresql(post):
    """A raise moves occurrences and lastSeen. With an index on either, PostgreSQL
    writes a new entry into every index of the faults table for each raise, with the
    stations locked (docs/PERFORMANCE.md, fifth session); without, the new row version
    stays on its page and no index is touched (a HOT update).

    pg_stat_xact_user_tables also holds this connection's counts not yet flushed from
    earlier tests, and nothing is flushed inside the test's transaction: so the raises'
    own counts are the difference across them."""

    def fault_updates() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                "WHERE relid = %s::regclass",
                [Fault._meta.db_table],
            )
            return cursor.fetchone()

    post(fault_event(timestamp="2026-11-28T10:00:00Z"))
    updated_before, heap_only_before = fault_updates()
    for minute in range(1, 4):
        post(fault_event(timestamp=f"2026-11-28T10:0{minute}:00Z"))
    updated, heap_only = fault_updates()

    assert Fault.objects.get().occurrences == 4
    assert updated - updated_before == 3
    assert heap_only - heap_only_before == 3
