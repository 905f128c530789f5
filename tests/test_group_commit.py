"""The group committer (notifications/ingest/group_commit.py): requests queued while its
writer thread is busy are stored in one transaction; if that transaction fails, each
request is stored alone, so one request's trouble is never another's. Publishing
happens once per stored row, in commit order, on the publisher thread.

Outside a test transaction: `store` runs inline inside an atomic block, and the writer
thread must see what the test's threads committed.
"""

import json
import threading
import time

import pytest
from django.core.management import call_command
from django.db import IntegrityError, OperationalError, connection, connections, transaction

from cgm import db_health
from notifications.ingest import group_commit
from notifications.ingest.group_commit import GroupCommitter
from notifications.ingest.validation import validate_events
from notifications.models import Notification
from stations.models import Box, Station
from tests.conftest import make_event as any_event


def make_event(*args, **fields):
    """A notice (it opens no fault), so each station's log numbers are its notifications'
    alone and the group mechanics below read plainly; fault changes in the same log:
    tests/test_fault_lifecycle.py."""
    return any_event(*args, **{"faultType": "GENERAL", **fields})


pytestmark = pytest.mark.django_db(transaction=True)

STATIONS = ["ST001", "ST002", "ST003"]


@pytest.fixture(autouse=True)
def stations():
    call_command("demo_data", stations=len(STATIONS), stdout=open("/dev/null", "w"))  # noqa: SIM115


@pytest.fixture
def published(monkeypatch):
    """Every notification handed to this process's streams, as (station, seq, message
    id), in the order of delivery (fault frames left out)."""
    from notifications.push.local import local_channels

    calls = []

    def record(events):
        calls.extend(
            (event.channel, event.id, _message_id(event.data))
            for event in events
            if event.type == "notification"
        )

    monkeypatch.setattr(local_channels, "deliver", record)
    return calls


def _message_id(data: str) -> str:
    return json.loads(data)["id"]


@pytest.fixture
def committer(monkeypatch):
    """A committer of its own (its own writer and publisher threads) for each test."""
    committer = GroupCommitter(max_events=2000)
    yield committer
    if committer._writer is not None:
        # The writer thread keeps its database connection between groups: have it give
        # that back (the test database is flushed, or dropped, after the test).
        def give_back(requests, publish):
            connection.close()
            return [[] for _ in requests]

        monkeypatch.setattr(group_commit, "notification_ingest_group", give_back)
        committer.store(events=[])


def events_for(*raw_events):
    events, errors = validate_events(list(raw_events), batch=True)
    assert not errors, errors
    return events


def ids(stored) -> list[str]:
    return [s.notification.message_id for s in stored]


def in_threads(work: dict) -> dict:
    """name -> work() on a thread each, started together: name -> result or exception."""
    start = threading.Barrier(len(work))
    results = {}

    def run(name, fn):
        try:
            start.wait()
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 (returned to the test)
            results[name] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=item) for item in work.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a store never returned"
    return results


def wait_published(published: list, count: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while len(published) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # and nothing more arrives after them
    return list(published)


def queue_behind_a_busy_writer(committer, monkeypatch, requests: dict) -> tuple[dict, list]:
    """Store `requests` (name -> events) as one group: the writer is held busy with a
    first request until all of them are queued, in this order. Returns the results by
    name and the message ids of every group the writer tried."""
    real = group_commit.notification_ingest_group
    groups: list[list[list[str]]] = []
    release = threading.Event()

    def held(requests_, publish):
        groups.append([[e.message_id for e in events] for events in requests_])
        if len(groups) == 1:
            assert release.wait(30), "the test never released the writer"
        return real(requests_, publish)

    monkeypatch.setattr(group_commit, "notification_ingest_group", held)
    results = {}
    threads = []

    def run(name, events):
        try:
            results[name] = committer.store(events=events)
        except BaseException as exc:  # noqa: BLE001 (returned to the test)
            results[name] = exc
        finally:
            connections.close_all()

    first = events_for(make_event("ST003", id="holds-the-writer"))
    for name, events in [("holder", first), *requests.items()]:
        queued = committer._queue.qsize()
        thread = threading.Thread(target=run, args=(name, events))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        if name == "holder":
            while not groups and time.monotonic() < deadline:
                time.sleep(0.005)  # the writer has taken it and is held
        else:
            while committer._queue.qsize() == queued and time.monotonic() < deadline:
                time.sleep(0.005)  # queued behind it, in order
    release.set()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a store never returned"
    assert groups[0] == [["holds-the-writer"]]
    return results, groups


def test_concurrent_stores_each_get_their_own_rows_with_contiguous_sequences(committer, published):
    writers, each = 8, 6
    requests = {
        (writer, number): events_for(
            *(
                make_event(STATIONS[(writer + number + i) % 3], id=f"w{writer}-n{number}-e{i}")
                for i in range(1 + (writer + number) % 3)  # batches of 1 to 3 events
            )
        )
        for writer in range(writers)
        for number in range(each)
    }

    def writer_work(writer):
        def work():
            return {
                number: committer.store(events=requests[(writer, number)]) for number in range(each)
            }

        return work

    results = in_threads({writer: writer_work(writer) for writer in range(writers)})

    stored = {}
    for writer, result in results.items():
        assert not isinstance(result, BaseException), result
        for number, rows in result.items():
            stored[(writer, number)] = rows
            # Its own rows, in its own order, all new.
            assert ids(rows) == [e.message_id for e in requests[(writer, number)]]
            assert all(s.created for s in rows)
            assert all(s.notification.pk is not None for s in rows)
    total = sum(len(events) for events in requests.values())
    assert Notification.objects.count() == total

    # Every station's numbers are 1..n, each once, and they are what the callers got.
    answered = {}
    for rows in stored.values():
        for s in rows:
            answered.setdefault(s.notification.station.code, []).append(s.notification.seq)
    in_db = {}
    for code, seq in Notification.objects.values_list("station__code", "seq"):
        in_db.setdefault(code, []).append(seq)
    for code in STATIONS:
        assert sorted(answered[code]) == list(range(1, len(answered[code]) + 1)), code
        assert sorted(in_db[code]) == sorted(answered[code]), code
        assert Station.objects.get(code=code).log_seq == len(answered[code])

    # Published once each, and per station in sequence order (commit order).
    delivered = wait_published(published, total)
    assert len(delivered) == total
    assert {message_id for _, _, message_id in delivered} == {
        s.notification.message_id for rows in stored.values() for s in rows
    }
    for code in STATIONS:
        seqs = [seq for channel, seq, _ in delivered if channel == code]
        assert seqs == list(range(1, len(seqs) + 1)), code


def test_requests_queued_while_the_writer_is_busy_are_stored_as_one_group(
    committer, published, monkeypatch
):
    requests = {
        "b": events_for(make_event("ST001", id="b1"), make_event("ST002", id="b2")),
        "c": events_for(make_event("ST001", id="c1")),
        "d": events_for(make_event("ST002", id="d1"), make_event("ST001", id="d2")),
    }

    results, groups = queue_behind_a_busy_writer(committer, monkeypatch, requests)

    assert groups == [[["holds-the-writer"]], [["b1", "b2"], ["c1"], ["d1", "d2"]]]
    assert {name: ids(rows) for name, rows in results.items()} == {
        "holder": ["holds-the-writer"],
        "b": ["b1", "b2"],
        "c": ["c1"],
        "d": ["d1", "d2"],
    }
    seqs = {
        s.notification.message_id: (s.notification.station.code, s.notification.seq)
        for rows in results.values()
        for s in rows
    }
    assert seqs == {
        "holds-the-writer": ("ST003", 1),
        "b1": ("ST001", 1),
        "b2": ("ST002", 1),
        "c1": ("ST001", 2),
        "d1": ("ST002", 2),
        "d2": ("ST001", 3),
    }
    delivered = wait_published(published, 6)
    assert [message_id for _, _, message_id in delivered] == [
        "holds-the-writer",
        "b1",
        "b2",
        "c1",
        "d1",
        "d2",
    ]


def test_an_id_repeated_across_a_group_is_stored_once_for_the_first(
    committer, published, monkeypatch
):
    results, groups = queue_behind_a_busy_writer(
        committer,
        monkeypatch,
        {
            "first": events_for(make_event("ST001", id="same")),
            "retry": events_for(make_event("ST001", id="same", message="a sender's retry")),
        },
    )

    assert groups[1] == [["same"], ["same"]]
    first, retry = results["first"][0], results["retry"][0]
    assert first.created and not retry.created
    assert retry.notification.pk == first.notification.pk
    assert Notification.objects.filter(message_id="same").count() == 1
    delivered = wait_published(published, 2)
    assert [message_id for _, _, message_id in delivered] == ["holds-the-writer", "same"]


def test_a_request_failing_at_the_database_gets_its_own_error_and_its_group_is_stored(
    committer, published, monkeypatch
):
    # A box that existed when its event was validated and is gone when it is stored.
    station = Station.objects.get(code="ST002")
    doomed = Box.objects.create(station=station, code="ST002-GONE")
    bad_events = events_for(make_event("ST002", id="bad", boxId="ST002-GONE", connectorId=...))
    doomed.delete()

    results, groups = queue_behind_a_busy_writer(
        committer,
        monkeypatch,
        {
            "before": events_for(make_event("ST001", id="before"), make_event("ST002", id="b2")),
            "bad": bad_events,
            "after": events_for(make_event("ST002", id="after")),
        },
    )

    # Tried as one group; that transaction failed, so each was stored alone.
    assert groups[1] == [["before", "b2"], ["bad"], ["after"]]
    assert isinstance(results["bad"], IntegrityError), results["bad"]
    assert ids(results["before"]) == ["before", "b2"]
    assert ids(results["after"]) == ["after"]
    assert all(s.created for s in [*results["before"], *results["after"]])
    # Nothing lost, nothing half-stored, and the failed group used up no numbers.
    assert sorted(Notification.objects.values_list("message_id", "station__code", "seq")) == [
        ("after", "ST002", 2),
        ("b2", "ST002", 1),
        ("before", "ST001", 1),
        ("holds-the-writer", "ST003", 1),
    ]
    assert Station.objects.get(code="ST002").log_seq == 2
    delivered = wait_published(published, 4)
    assert [message_id for _, _, message_id in delivered] == [
        "holds-the-writer",
        "before",
        "b2",
        "after",
    ]


def test_a_group_whose_transaction_fails_once_is_stored_request_by_request(
    committer, published, stored_alone, monkeypatch
):
    """A failure that is no request's fault (a duplicate id raced in from another
    process, say): every request of the group is still stored and answered."""
    real = group_commit.notification_ingest_group
    attempts = []

    def fails_for_groups(requests, publish):
        attempts.append(len(requests))
        if len(requests) > 1:
            raise IntegrityError("simulated: the group's transaction failed")
        return real(requests, publish)

    # Patched under the helper's hold-the-writer wrapper.
    monkeypatch.setattr(group_commit, "notification_ingest_group", fails_for_groups)
    results, groups = queue_behind_a_busy_writer(
        committer,
        monkeypatch,
        {
            "x": events_for(make_event("ST001", id="x1"), make_event("ST001", id="x2")),
            "y": events_for(make_event("ST001", id="y1")),
            "z": events_for(make_event("ST002", id="z1")),
        },
    )

    assert groups[1] == [["x1", "x2"], ["y1"], ["z1"]]
    assert attempts == [1, 3]
    assert stored_alone == [["x1", "x2"], ["y1"], ["z1"]]
    assert {name: ids(rows) for name, rows in results.items()} == {
        "holder": ["holds-the-writer"],
        "x": ["x1", "x2"],
        "y": ["y1"],
        "z": ["z1"],
    }
    assert [s.notification.seq for s in [*results["x"], *results["y"]]] == [1, 2, 3]
    assert all(s.created for rows in results.values() for s in rows)
    assert Notification.objects.count() == 5
    delivered = wait_published(published, 5)
    assert [(channel, seq, message_id) for channel, seq, message_id in delivered] == [
        ("ST003", 1, "holds-the-writer"),
        ("ST001", 1, "x1"),
        ("ST001", 2, "x2"),
        ("ST001", 3, "y1"),
        ("ST002", 1, "z1"),
    ]


@pytest.fixture
def stored_alone(monkeypatch):
    """The requests the committer stores one by one (after their group failed), each as
    its message ids."""
    alone = []
    real_alone = group_commit.notification_ingest

    def record_alone(*, events, publish):
        alone.append([e.message_id for e in events])
        return real_alone(events=events, publish=publish)

    monkeypatch.setattr(group_commit, "notification_ingest", record_alone)
    return alone


@pytest.fixture
def breaker(monkeypatch, settings):
    """cgm/db_health.py's breaker, closed at the start and put back after the test; once
    opened, it stays open for the test's length (request it after `committer`)."""
    monkeypatch.setattr(db_health, "_open_until", 0.0)
    monkeypatch.setattr(db_health, "_last_error", None)
    settings.CGM_DB_RETRY_SECONDS = 60
    yield
    # Closed again before the committer's own teardown stores through its writer.
    monkeypatch.setattr(db_health, "_open_until", 0.0)


def test_a_group_meeting_the_open_breaker_gets_its_error_at_once_nothing_tried(
    committer, breaker, stored_alone, monkeypatch
):
    """The database went away while the writer was busy: the group queued meanwhile is
    answered at once (503), not stored request by request, each waiting for the pool."""
    tried = []

    def database_goes_away(requests, publish):
        tried.append(len(requests))
        raise OperationalError("simulated: connection refused")

    monkeypatch.setattr(group_commit, "notification_ingest_group", database_goes_away)
    results, groups = queue_behind_a_busy_writer(
        committer,
        monkeypatch,
        {
            "x": events_for(make_event("ST001", id="x1")),
            "y": events_for(make_event("ST002", id="y1")),
        },
    )

    assert tried == [1]  # the holder's group alone reached the database
    assert groups == [[["holds-the-writer"]]]
    assert stored_alone == []
    assert isinstance(results["holder"], OperationalError)
    assert isinstance(results["x"], db_health.DatabaseAwayError)
    assert isinstance(results["y"], db_health.DatabaseAwayError)
    assert Notification.objects.count() == 0


def test_storing_one_by_one_stops_trying_once_the_database_is_away(committer, breaker, monkeypatch):
    """A group's transaction failed (no request's fault), and then the first request
    stored alone finds the database gone: the others get that at once."""

    def fails_for_groups(requests, publish):
        if len(requests) > 1:
            raise IntegrityError("simulated: the group's transaction failed")
        return real_group(requests, publish)

    tried_alone = []

    def database_gone(*, events, publish):
        tried_alone.append([e.message_id for e in events])
        raise OperationalError("simulated: connection refused")

    real_group = group_commit.notification_ingest_group
    monkeypatch.setattr(group_commit, "notification_ingest_group", fails_for_groups)
    monkeypatch.setattr(group_commit, "notification_ingest", database_gone)
    results, _ = queue_behind_a_busy_writer(
        committer,
        monkeypatch,
        {
            "x": events_for(make_event("ST001", id="x1")),
            "y": events_for(make_event("ST001", id="y1")),
            "z": events_for(make_event("ST002", id="z1")),
        },
    )

    assert tried_alone == [["x1"]]
    assert isinstance(results["x"], OperationalError)
    assert not isinstance(results["x"], db_health.DatabaseAwayError)
    assert isinstance(results["y"], db_health.DatabaseAwayError)
    assert isinstance(results["z"], db_health.DatabaseAwayError)
    assert ids(results["holder"]) == ["holds-the-writer"]


def test_a_lone_request_that_fails_gets_its_exception_and_the_writer_goes_on(
    committer, published, monkeypatch
):
    real = group_commit.notification_ingest_group
    failures = [IntegrityError("simulated: this request's transaction failed")]

    def fails_once(requests, publish):
        if failures:
            raise failures.pop()
        return real(requests, publish)

    monkeypatch.setattr(group_commit, "notification_ingest_group", fails_once)

    with pytest.raises(IntegrityError, match="simulated"):
        committer.store(events=events_for(make_event("ST001", id="unlucky")))
    # Nothing of it stored; the writer thread is alive and the same request now goes in.
    assert not Notification.objects.filter(message_id="unlucky").exists()
    stored = committer.store(events=events_for(make_event("ST001", id="unlucky")))

    assert ids(stored) == ["unlucky"] and stored[0].created
    assert stored[0].notification.seq == 1
    delivered = wait_published(published, 1)
    assert delivered == [("ST001", 1, "unlucky")]


def test_inside_an_atomic_block_store_runs_inline_on_the_callers_transaction(committer, published):
    with transaction.atomic():
        stored = committer.store(events=events_for(make_event("ST001", id="inline")))
        assert Notification.objects.filter(message_id="inline").exists()
        transaction.set_rollback(True)

    assert ids(stored) == ["inline"]
    assert committer._writer is None  # no thread was involved
    assert not Notification.objects.filter(message_id="inline").exists()
    assert wait_published(published, 0) == []  # rolled back: never published
