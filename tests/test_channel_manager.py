"""django-eventstream's channel manager enforces the stream view's per-station policy.

Nothing here mounts django_eventstream.urls, but the day someone does (or calls its
`channel_permission_changed`), its `can_read_channel` must say exactly what the stream
view says: the same function decides both (notifications/streams/channels.py).
"""

import io

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.core.management import call_command
from django_eventstream.utils import get_channelmanager

from access.models import ApiKey, StationAccess
from access.policy import Principal
from notifications.streams.channels import StationChannelManager, forbidden_stations
from stations.models import Station

pytestmark = pytest.mark.django_db
CODES = ["ST001", "ST002", "ST003"]


@pytest.fixture(autouse=True)
def stations():
    call_command("demo_data", stations=3, stdout=io.StringIO())


def test_django_eventstream_is_configured_with_the_station_manager():
    assert isinstance(get_channelmanager(), StationChannelManager)


def callers():
    station = Station.objects.get(code="ST001")
    assigned = User.objects.create_user("assigned")
    StationAccess.objects.create(user=assigned, station=station)
    via_group = User.objects.create_user("via-group")
    group = Group.objects.create(name="depot 2")
    group.user_set.add(via_group)
    StationAccess.objects.create(group=group, station=Station.objects.get(code="ST002"))
    inactive = User.objects.create_user("inactive", is_active=False)
    StationAccess.objects.create(user=inactive, station=station)
    admin = User.objects.create_superuser("root", "", "x")
    nobody = User.objects.create_user("nobody")
    reader, _ = ApiKey.issue(name="reader", scope=ApiKey.Scope.SUBSCRIBE)
    reader.stations.add(station)
    ingest, _ = ApiKey.issue(name="ingest", scope=ApiKey.Scope.INGEST, all_stations=True)
    return {
        "assigned user": (assigned, Principal("user", assigned.pk)),
        "user through a group": (via_group, Principal("user", via_group.pk)),
        "inactive user": (inactive, Principal("user", inactive.pk)),
        "superuser": (admin, Principal("user", admin.pk)),
        "user with nothing": (nobody, Principal("user", nobody.pk)),
        "subscribe key": (reader, Principal("key", reader.pk)),
        "ingest key": (ingest, Principal("key", ingest.pk)),
    }


def test_can_read_channel_answers_what_the_stream_view_answers_for_every_caller():
    manager = get_channelmanager()
    answers = {}
    for name, (caller, principal) in callers().items():
        view_forbids = set(forbidden_stations(principal, CODES))
        for code in CODES:
            assert manager.can_read_channel(caller, code) == (code not in view_forbids), (
                name,
                code,
            )
        answers[name] = sorted(set(CODES) - view_forbids)
    # And the policy itself, so that agreement is not agreement on "everything".
    assert answers == {
        "assigned user": ["ST001"],
        "user through a group": ["ST002"],
        "inactive user": [],
        "superuser": CODES,
        "user with nothing": [],
        "subscribe key": ["ST001"],
        "ingest key": [],
    }


def test_an_anonymous_caller_may_read_no_channel():
    manager = get_channelmanager()
    assert not any(manager.can_read_channel(None, code) for code in CODES)
    assert not any(manager.can_read_channel(AnonymousUser(), code) for code in CODES)
