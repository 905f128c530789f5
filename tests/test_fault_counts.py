"""GET /api/fault-counts: the console's station badges, for the stations a caller may read."""

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

from access.models import StationAccess
from stations.models import Station
from tests.conftest import key_client, make_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def stations():
    call_command("demo_data", stations=3, stdout=open("/dev/null", "w"))  # noqa: SIM115


@pytest.fixture
def post(django_capture_on_commit_callbacks):
    client = key_client("ingest", all_stations=True)

    def do(*events):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/api/event", list(events), format="json")
        assert response.status_code == 201, response.content

    return do


def _fault_id(station: str, fault_type: str) -> str:
    reader = key_client("subscribe", all_stations=True)
    faults = reader.get(f"/api/stations/{station}/state").json()["faults"]
    return next(f["id"] for f in faults if f["faultType"] == fault_type)


def test_it_counts_unresolved_critical_and_error_faults_and_the_unacknowledged(post):
    post(
        make_event("ST001", faultType="GroundFailure"),  # critical
        make_event("ST001", faultType="SYSTEM_ERROR"),  # error
        make_event("ST001", faultType="SYSTEM_ERROR"),  # a repeat: the same fault
        make_event("ST001", faultType="WeakSignal"),  # warning: unacknowledged only
        make_event("ST001", faultType="NO_ERROR"),  # a notice: no fault
        make_event("ST002", faultType="REMOTE_ERROR", boxId="ST002-B2"),
        make_event("ST002", faultType="OverVoltage", boxId="ST002-B2"),
    )
    operator = key_client("operate", all_stations=True)
    response = operator.post(f"/api/faults/{_fault_id('ST002', 'OverVoltage')}/resolve")
    assert response.status_code == 200, response.content
    response = operator.post(f"/api/faults/{_fault_id('ST001', 'SYSTEM_ERROR')}/acknowledge")
    assert response.status_code == 200, response.content

    response = key_client("subscribe", all_stations=True).get("/api/fault-counts")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "stations": {
            "ST001": {"critical": 1, "error": 1, "unacknowledged": 2},
            "ST002": {"critical": 0, "error": 1, "unacknowledged": 1},
        }
    }


def test_it_counts_only_the_stations_the_caller_may_read(post):
    post(make_event("ST001"), make_event("ST002"))
    user = User.objects.create_user("depot-b", password="pw")
    StationAccess.objects.create(user=user, station=Station.objects.get(code="ST002"))
    client = APIClient()
    client.force_login(user)

    response = client.get("/api/fault-counts")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "stations": {"ST002": {"critical": 0, "error": 1, "unacknowledged": 1}}
    }
    key = key_client("subscribe", stations=[Station.objects.get(code="ST003")])
    assert key.get("/api/fault-counts").json() == {"stations": {}}


def test_it_refuses_a_caller_without_credentials():
    response = APIClient().get("/api/fault-counts")
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "unauthenticated"
