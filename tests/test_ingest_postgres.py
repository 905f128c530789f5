"""The PostgreSQL ingest statement (notifications/services.py) outside a test transaction.

Each group is one statement in autocommit there, so what a transaction used to
guarantee (contiguous numbers per station, an id stored once, publishing only what is
committed) must hold with real concurrent connections. These run in the PostgreSQL
pass of `make test` (DATABASE_URL set to PostgreSQL).
"""

import threading

import pytest
from django.core.management import call_command
from django.db import connection, connections

from notifications.models import Notification
from notifications.serializers import validate_events
from notifications.services import notification_ingest_group
from stations.models import Station
from tests.conftest import make_event

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="PostgreSQL's ingest statement: runs in the PostgreSQL pass of make test",
    ),
]

STATIONS = ["ST001", "ST002", "ST003"]


@pytest.fixture(autouse=True)
def stations():
    call_command("demo_data", stations=len(STATIONS), stdout=open("/dev/null", "w"))  # noqa: SIM115


def events_for(*raw_events):
    events, errors = validate_events(list(raw_events), batch=True)
    assert not errors
    return events


def run_in_threads(count: int, work) -> list:
    """work(index) on `count` threads started together, each with its own connection."""
    start = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def run(index):
        try:
            start.wait()
            results[index] = work(index)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_concurrent_writers_keep_every_station_contiguous():
    writers, groups_each = 6, 15

    def write(index):
        for group in range(groups_each):
            # Every group touches every station, in a different order each time.
            requests = [
                events_for(make_event(code, id=f"w{index}-g{group}-{code}"))
                for code in (STATIONS if (index + group) % 2 else reversed(STATIONS))
            ]
            notification_ingest_group(requests, publish=lambda rows: None)

    run_in_threads(writers, write)

    for code in STATIONS:
        station = Station.objects.get(code=code)
        seqs = list(
            Notification.objects.filter(station=station)
            .order_by("seq")
            .values_list("seq", flat=True)
        )
        assert seqs == list(range(1, writers * groups_each + 1))
        assert station.log_seq == writers * groups_each


def test_the_same_id_from_two_writers_at_once_is_stored_and_published_once():
    published = []
    lock = threading.Lock()

    def publish(rows):
        with lock:
            published.extend(row.message_id for row in rows)

    def write(index):
        # Two stations, so neither writer waits on the other's station lock: the
        # unique index is what has to catch the second one.
        event = make_event(STATIONS[index], id="same-id")
        return notification_ingest_group([events_for(event)], publish=publish)[0][0]

    stored = run_in_threads(2, write)

    assert sorted(s.created for s in stored) == [False, True]
    assert Notification.objects.filter(message_id="same-id").count() == 1
    assert published == ["same-id"]
    winner = next(s for s in stored if s.created).notification
    loser = next(s for s in stored if not s.created).notification
    # Both answers are the stored row; the station the loser named kept no number.
    assert (loser.pk, loser.station.code, loser.seq) == (winner.pk, winner.station.code, 1)
    other = next(code for code in STATIONS[:2] if code != winner.station.code)
    assert Station.objects.get(code=other).log_seq == 0


def test_ids_repeated_across_a_group_and_already_stored_ones_are_answered_from_the_log():
    first = make_event("ST001", id="known")
    notification_ingest_group([events_for(first)], publish=lambda rows: None)

    published = []
    repeat = make_event("ST002", id="twice")
    result = notification_ingest_group(
        [events_for(repeat), events_for(make_event("ST001", id="known")), events_for(repeat)],
        publish=lambda rows: published.extend(rows),
    )

    assert [[s.created for s in request] for request in result] == [[True], [False], [False]]
    assert [row.message_id for row in published] == ["twice"]
    assert result[1][0].notification.station.code == "ST001"
    assert result[1][0].notification.seq == 1
    assert result[2][0].notification is result[0][0].notification


def test_publish_runs_after_the_rows_are_visible_to_other_connections():
    seen_by_another_connection = []

    def publish(rows):
        def look():
            ids = [row.message_id for row in rows]
            seen_by_another_connection.append(
                Notification.objects.filter(message_id__in=ids).count()
            )

        run_in_threads(1, lambda index: look())

    notification_ingest_group(
        [events_for(make_event("ST001"), make_event("ST002"))], publish=publish
    )
    assert seen_by_another_connection == [2]
