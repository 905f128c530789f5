"""The Pushpin relay (notifications/push/pushpin_relay.py) on PostgreSQL: whichever
connection commits a station's entries, Pushpin gets them from one relay, in the
station's order, once.

Real PostgreSQL (the relay LISTENs, and takes its role with an advisory lock), real
commits on several connections; Pushpin's publish endpoint is a stand-in that records
what it gets (tests/test_grip_publish.py). These run in the PostgreSQL pass of `make
test`.
"""

import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction

from notifications.ingest.services import notification_ingest
from notifications.ingest.validation import validate_events
from notifications.push import pushpin as grip
from notifications.push.pushpin_relay import Relay
from tests.conftest import make_event
from tests.test_grip_publish import PublishEndpoint

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="the relay LISTENs on PostgreSQL: runs in the PostgreSQL pass of make test",
    ),
]

STATION = "ST001"


@pytest.fixture(autouse=True)
def stations():
    call_command("demo_data", stations=2, stdout=open("/dev/null", "w"))  # noqa: SIM115


@pytest.fixture
def node(settings):
    endpoint = PublishEndpoint()
    settings.GRIP_URLS = [endpoint.url]
    grip._connections.by_url = {}
    yield endpoint
    endpoint.stop()
    grip._connections.by_url = {}


def start_relays(count: int) -> list[Relay]:
    relays = [Relay() for _ in range(count)]
    for relay in relays:
        relay.start()
    deadline = time.monotonic() + 10
    while not any(relay.leading for relay in relays):
        assert time.monotonic() < deadline, "no relay took the role"
        time.sleep(0.05)
    return relays


@pytest.fixture
def relays(node):
    started: list[Relay] = []

    def start(count: int = 1) -> list[Relay]:
        started.extend(start_relays(count))
        return started

    yield start
    for relay in started:
        relay.stop()


def ingest(*raw_events):
    events, errors = validate_events(list(raw_events), batch=True)
    assert not errors
    return notification_ingest(events=events)


def published(
    node: PublishEndpoint, channel: str, count: int, timeout: float = 10, hints: bool = False
) -> list:
    """The entries (or, with hints=True, the hints) the node got for `channel`, once it
    has `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        items = [
            item
            for body in list(node.bodies)
            for item in body["items"]
            if item["channel"] == channel and (("id" in item) != hints)
        ]
        if len(items) >= count or time.monotonic() > deadline:
            return items
        time.sleep(0.05)


def test_a_committer_that_is_slow_after_its_commit_cannot_reorder_a_station(node, relays):
    relays()
    # A commits ST001's first event (entries 1 and 2) and is then slow (a busy process:
    # its own work after the commit is delayed). B's event for ST001 waits for A's
    # lock, and commits right after A.
    written = threading.Event()
    errors = []

    def committer_a():
        try:
            with transaction.atomic():
                transaction.on_commit(lambda: time.sleep(1.0))  # runs before A's own
                ingest(make_event(STATION))
                written.set()
                time.sleep(0.5)  # B is waiting for the station's lock meanwhile
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            written.set()
            connections.close_all()

    def committer_b():
        try:
            written.wait()
            ingest(make_event(STATION))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=committer_a), threading.Thread(target=committer_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    items = published(node, f"events-{STATION}", 4)
    # Each event is a notification and the fault it raised: four entries, in order.
    assert [(item["id"], item["prev-id"]) for item in items] == [
        ("1", "0"),
        ("2", "1"),
        ("3", "2"),
        ("4", "3"),
    ]


def test_one_relay_publishes_whatever_many_processes_run_one(node, relays):
    running = relays(3)
    assert sum(relay.leading for relay in running) == 1

    for _ in range(3):
        ingest(make_event(STATION), make_event("ST002"))
    time.sleep(0.5)  # anything a second relay would have sent is in by then

    for channel in (f"events-{STATION}", "events-ST002"):
        items = published(node, channel, 6)
        assert [item["id"] for item in items] == ["1", "2", "3", "4", "5", "6"]


def test_when_the_relay_stops_another_process_takes_over(node, relays):
    first, second = relays(2)
    leader, standby = (first, second) if first.leading else (second, first)
    ingest(make_event(STATION))
    assert [item["id"] for item in published(node, f"events-{STATION}", 2)] == ["1", "2"]

    hints_before = len(published(node, f"events-{STATION}", 0, hints=True))
    leader.stop()  # as its process ending would: its session, and the lock, go
    ingest(make_event(STATION))  # 3 and 4: committed before or after the takeover
    deadline = time.monotonic() + 10
    while not standby.leading:
        assert time.monotonic() < deadline, "the standby did not take over"
        time.sleep(0.05)

    # The new relay cannot know what was published before it: it hints every
    # station's streams to read the log, which has 3 and 4 either way.
    hints = published(node, f"events-{STATION}", hints_before + 1, hints=True)
    assert hints[-1]["formats"] == {"http-stream": {"action": "hint"}}
    ingest(make_event(STATION))
    deadline = time.monotonic() + 10
    while (ids := [i["id"] for i in published(node, f"events-{STATION}", 0)])[-1:] != ["6"]:
        assert time.monotonic() < deadline, ids
        time.sleep(0.05)
    assert ids in (["1", "2", "5", "6"], ["1", "2", "3", "4", "5", "6"])


def test_the_relay_takes_the_connection_it_is_given(node, relays, settings):
    # Behind a pooler in transaction mode, which does not carry LISTEN, the relay is
    # given a direct connection of its own (CGM_RELAY_DATABASE_URL).
    db = connection.settings_dict
    settings.CGM_RELAY_DATABASE_URL = (
        f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/no_such_database"
    )
    lost = Relay()
    lost.start()
    try:
        time.sleep(1.5)
        assert not lost.leading  # it really connects where the setting says
    finally:
        lost.stop()

    settings.CGM_RELAY_DATABASE_URL = (
        f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    )
    relays()
    ingest(make_event(STATION))
    assert [item["id"] for item in published(node, f"events-{STATION}", 2)] == ["1", "2"]


def test_the_relay_reads_an_announcement_page_by_page_and_nothing_past_it(node, monkeypatch):
    from notifications.push import pushpin_relay
    from stations.models import Station

    for _ in range(7):
        ingest(make_event(STATION))  # entries 1-14
    for _ in range(5):
        ingest(make_event("ST002"))  # entries 1-10
    a, b = Station.objects.get(code=STATION), Station.objects.get(code="ST002")
    monkeypatch.setattr(pushpin_relay, "PAGE", 3)

    pushpin_relay.publish_entries({a.pk: (a.code, 3, 10), b.pk: (b.code, 1, 10)})

    for channel, expected in ((f"events-{STATION}", range(3, 11)), ("events-ST002", range(1, 11))):
        items = published(node, channel, len(expected))
        assert [int(item["id"]) for item in items] == list(expected)


def test_an_announcement_of_many_stations_goes_as_several_notifications():
    from notifications.push.pushpin_relay import payloads

    ranges = {pk: (f"STATION-{pk:05d}", pk, pk + 1) for pk in range(1, 1001)}
    sent = payloads(ranges)
    assert len(sent) > 1
    assert all(len(payload.encode()) <= 7000 for payload in sent)
    import json

    assert [tuple(e) for p in sent for e in json.loads(p)] == [
        (pk, code, first, last) for pk, (code, first, last) in ranges.items()
    ]


def test_a_standby_steps_back_even_if_its_batch_in_flight_never_ends(monkeypatch, caplog):
    from notifications.push import pushpin_relay

    monkeypatch.setattr(pushpin_relay, "step_back_wait_seconds", lambda: 0.2)
    standby = Relay(standby_seconds=5)
    standby._leading, standby._busy = True, True  # a worker stuck in its batch
    stepping = threading.Thread(target=standby._step_back, daemon=True)
    stepping.start()
    stepping.join(5)
    assert not stepping.is_alive(), "the standby waits for ever, holding the role"
    assert not standby.leading
    assert "still publishing after 0.2 s; stepping back anyway" in caplog.text


def test_a_servers_standby_gives_the_role_back_to_a_relay_process(node, relays):
    standby = Relay(standby_seconds=1)  # a Daphne worker's
    standby.start()
    try:
        deadline = time.monotonic() + 10
        while not standby.leading:  # no relay process yet: the standby takes the role
            assert time.monotonic() < deadline, "the standby did not take the role"
            time.sleep(0.05)
        (process,) = relays()  # a relay process starts, and waits for the role
        while standby.leading:  # (it steps back before the process takes the lock)
            assert time.monotonic() < deadline, "the standby kept the role"
            time.sleep(0.05)
        assert process.leading

        ingest(make_event(STATION))
        items = published(node, f"events-{STATION}", 2)
        assert [item["id"] for item in items] == ["1", "2"]
    finally:
        standby.stop()
