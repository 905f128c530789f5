"""The PostgreSQL ingest (notifications/ingest/services.py) outside a test transaction.

Each group is one transaction: the prepared statement, then the faults and statuses it
derives (faults/derive.py). Contiguous log numbers per station, one unresolved fault
per key, an id stored once, publishing only what is committed: all must hold with real
concurrent connections. These run in the PostgreSQL
pass of `make test` (DATABASE_URL set to PostgreSQL).
"""

import json
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction

from cgm import pg_statements
from faults.models import Fault
from notifications.ingest.services import notification_ingest_group
from notifications.ingest.validation import validate_events
from notifications.log import log_entries_after
from notifications.models import LogEntry, Notification
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


def notification_ids(frames) -> list[str]:
    return [json.loads(f.data)["id"] for f in frames if f.type == "notification"]


def test_concurrent_writers_keep_every_station_contiguous_with_one_fault_per_key():
    """Every event fires the same fault key of its station: six writers racing on it
    still make one fault per station, raised once per event, and each station's log
    is 1..n with no hole: each event's notification and fault change."""
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
        events = writers * groups_each
        notifications = list(
            Notification.objects.filter(station=station).values_list("seq", flat=True)
        )
        changes = list(LogEntry.objects.filter(station=station).values_list("seq", flat=True))
        assert len(notifications) == events
        # One counter for both: 1..n without a hole or a repeat.
        assert sorted(notifications + changes) == list(range(1, station.log_seq + 1))
        fault = Fault.objects.get(station=station)
        assert (fault.state, fault.occurrences) == ("open", events)


def test_a_page_of_the_log_read_while_writers_commit_has_no_hole():
    """notifications/log.py reads a page of the log's two tables in one statement, so
    in one snapshot: past any position, a station's entries run without a hole while
    writers commit notifications and their fault changes alongside. (Read with one
    statement per table, a group that committed between the two showed its
    notification without its change.)"""
    writers, groups_each = 4, 100
    station = Station.objects.get(code="ST001")
    finished = threading.Semaphore(0)
    pages: list[list[int]] = []

    def write(index):
        for group in range(groups_each):
            event = make_event("ST001", id=f"page-{index}-{group}")
            notification_ingest_group([events_for(event)], publish=lambda rows: None)
        finished.release()

    def read():
        done, position = 0, 0
        while done < writers:
            if finished.acquire(blocking=False):
                done += 1
            page = log_entries_after({station.pk: ("ST001", position)}, 100)
            pages.append([position] + [item.seq for item in page])
            # From a few entries behind the last one read: the next page covers what
            # is being committed.
            position = max(position, pages[-1][-1] - 4)

    run_in_threads(writers + 1, lambda index: read() if index == writers else write(index))

    assert len(pages) > 20  # the reader read while the writers wrote
    # Each page: the entries right after its position, one after another.
    holed = [p for p in pages if p[1:] != list(range(p[0] + 1, p[0] + len(p)))]
    assert not holed, holed[:5]


def other_connection():
    """A connection of its own, outside Django's, for holding locks and rows."""
    settings = connection.settings_dict
    return psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
    )


def wait_until_blocked(conn, seconds=10.0):
    """Until some other session waits on a lock (the ingest, blocked by `conn`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
        if row[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the ingest never waited on the lock")


def in_background(work):
    """work() on a thread with its own connection; returns (thread, result dict)."""
    result: dict = {}

    def run():
        try:
            result["stored"] = work()
        except BaseException as exc:  # noqa: BLE001 (re-raised by the test)
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def ingest_in_thread(requests, publish):
    return in_background(lambda: notification_ingest_group(requests, publish=publish))


def hold_uncommitted_row(message_id: str, station_code: str = "ST003"):
    """Another writer's row with this id, inserted and not committed yet: commit or
    close the returned connection to let go."""
    station = Station.objects.get(code=station_code)
    holder = other_connection()
    holder.execute(
        "INSERT INTO notifications_notification (station_id, seq, message_id, fault_type, "
        "action, message, code, received_at, extra, payload) "
        "VALUES (%s, 1, %s, 'F', 'A', '', '', now(), '{}', '{}')",
        [station.pk, message_id],
    )
    holder.execute("UPDATE stations_station SET log_seq = 1 WHERE id = %s", [station.pk])
    return holder


def commit_once_blocked(holder, thread):
    try:
        wait_until_blocked(holder)
    finally:
        holder.commit()
        holder.close()
    thread.join(30)


def test_an_id_committed_by_another_writer_while_the_statement_ran_is_answered_not_stored():
    """The race the unique index has to catch: the statement's snapshot does not see
    the other writer's row yet, so its insert waits on the index, then fails; the
    retry answers from the log. Made deterministic by holding the other transaction
    open until the ingest is seen waiting on it."""
    holder = hold_uncommitted_row("same-id")
    published = []
    thread, result = ingest_in_thread(
        [events_for(make_event("ST001", id="same-id"))], publish=published.extend
    )
    commit_once_blocked(holder, thread)

    assert "error" not in result, result.get("error")
    stored = result["stored"][0][0]
    assert stored.created is False
    assert (stored.notification.station.code, stored.notification.seq) == ("ST003", 1)
    assert published == []
    # The station the loser named got its number back.
    assert Station.objects.get(code="ST001").log_seq == 0
    assert Notification.objects.filter(message_id="same-id").count() == 1


def test_stations_are_locked_in_key_order_whatever_the_arrival_order():
    """Two writers locking the same stations in different orders would deadlock. The
    statement locks every station of a group in primary-key order before it waits:
    with ST002 held elsewhere, a group naming ST002 then ST001 already holds ST001
    while it waits for ST002."""
    station_1, station_2 = (Station.objects.get(code=c) for c in ("ST001", "ST002"))
    holder = other_connection()
    holder.execute("SELECT 1 FROM stations_station WHERE id = %s FOR UPDATE", [station_2.pk])
    thread, result = ingest_in_thread(
        [events_for(make_event("ST002"), make_event("ST001"))], publish=lambda rows: None
    )
    prober = other_connection()
    try:
        wait_until_blocked(holder)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            prober.execute(
                "SELECT 1 FROM stations_station WHERE id = %s FOR UPDATE NOWAIT", [station_1.pk]
            )
    finally:
        prober.close()
        holder.commit()
        holder.close()
        thread.join(30)
    assert "error" not in result, result.get("error")
    assert [s.created for s in result["stored"][0]] == [True, True]


def test_inside_a_callers_transaction_a_raced_id_rolls_back_only_the_statement():
    holder = hold_uncommitted_row("raced")
    published = []

    def ingest_in_a_transaction():
        with transaction.atomic():
            Station.objects.filter(code="ST002").update(name="kept")
            return notification_ingest_group(
                [events_for(make_event("ST001", id="raced"))], publish=published.extend
            )

    thread, result = in_background(ingest_in_a_transaction)
    commit_once_blocked(holder, thread)

    assert "error" not in result, result.get("error")
    assert result["stored"][0][0].created is False
    assert published == []
    # The caller's own work in the same transaction was not lost with the statement.
    assert Station.objects.get(code="ST002").name == "kept"


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
    assert notification_ids(published) == ["twice"]
    assert result[1][0].notification.station.code == "ST001"
    assert result[1][0].notification.seq == 1
    assert result[2][0].notification is result[0][0].notification


def test_every_column_reads_back_from_the_table_as_it_was_sent():
    """The group goes to PostgreSQL as one JSON object of columns (ingest/postgresql.py
    _group_json): every value, whatever its characters, comes back from the table as it
    was validated, absent ones as NULL or empty. (Arrival order within a station:
    tests/test_ingest.py's batch test.)"""
    awkward = "quote ' double \" backslash \\ newline \n tab \t ünïcödé 充電 😀 %s $1"
    station_wide = make_event("ST002", boxId=..., connectorId=..., message=...)
    everything = make_event(
        "ST001",
        id="id with ' and \" and \\",
        message=awkward,
        code="E'1\\",
        faultType='TYPE "x"',
        action="ACT\nION",
        timestamp="2026-11-30T10:00:00.123456+08:00",
        vendor={"ñame": None, "nested": [None, {"k": 'v"q'}], "empty": ""},
        reading=None,
    )
    notification_ingest_group([events_for(station_wide, everything)], publish=lambda frames: None)

    rows = {
        row["message_id"]: row
        for row in Notification.objects.values(
            "message_id", "station__code", "box_id", "connector_id", "seq", "fault_type",
            "action", "message", "code", "occurred_at", "extra", "payload",
        )
    }  # fmt: skip
    wide = rows[station_wide["id"]]
    assert (wide["station__code"], wide["box_id"], wide["connector_id"]) == ("ST002", None, None)
    assert (wide["message"], wide["code"], wide["occurred_at"]) == ("", "", None)
    assert wide["payload"] == station_wide

    full = rows[everything["id"]]
    assert full["station__code"] == "ST001" and full["box_id"] is not None
    assert full["connector_id"] is not None
    assert (full["fault_type"], full["action"]) == (everything["faultType"], everything["action"])
    assert (full["message"], full["code"]) == (awkward, "E'1\\")
    assert full["occurred_at"] == datetime(2026, 11, 30, 2, 0, 0, 123456, tzinfo=UTC)
    assert full["extra"] == {"vendor": everything["vendor"], "reading": None}
    assert full["payload"] == everything
    assert (wide["seq"], full["seq"]) == (1, 1)  # each the first of its station's log


def test_publish_runs_after_the_rows_are_visible_to_other_connections():
    seen_by_another_connection = []

    def publish(frames):
        def look():
            ids = notification_ids(frames)
            seen_by_another_connection.append(
                Notification.objects.filter(message_id__in=ids).count()
            )

        run_in_threads(1, lambda index: look())

    notification_ingest_group(
        [events_for(make_event("ST001"), make_event("ST002"))], publish=publish
    )
    assert seen_by_another_connection == [2]


def test_the_statements_are_prepared_once_per_connection():
    # Without the ingest's own PREPAREs the statements would be parsed and planned for
    # every group (docs/PERFORMANCE.md). A second PREPARE of a name would fail the group.
    _fresh_session()  # not one where stream reads prepared theirs (test_prepared_reads.py)
    for n in range(3):
        notification_ingest_group(
            [events_for(make_event("ST001", id=f"prep-{n}"))], publish=lambda rows: None
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        names = {name for (name,) in cursor.fetchall()}
        assert names == {statement.name for statement in pg_statements._STATEMENTS.values()}
        assert {"cgm_ingest", "cgm_write_derived"} <= names
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"


def test_without_prepared_statements_for_poolers_nothing_is_prepared_or_set(settings):
    settings.CGM_PG_PREPARE = False
    connection.close()
    connection.close_pool()  # a fresh session: nothing set up on it yet
    result = notification_ingest_group(
        [events_for(make_event("ST001", id="unprepared"), make_event("ST002"))],
        publish=lambda frames: None,
    )
    assert [s.created for s in result[0]] == [True, True]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "auto"


def _fresh_session():
    connection.close()
    connection.close_pool()  # a new session: nothing prepared on it yet


def test_statements_left_by_a_prepare_that_failed_part_way_do_not_block_the_next_groups():
    # A PREPARE outlives a rollback: one left behind must not fail every later attempt.
    _fresh_session()
    connection.ensure_connection()
    connection.connection.execute("PREPARE cgm_read_faults AS SELECT 1")
    result = notification_ingest_group(
        [events_for(make_event("ST001", id="after-a-half-prepare"))], publish=lambda f: None
    )
    assert [s.created for s in result[0]] == [True]


def test_a_session_that_lost_its_prepared_statements_fails_one_group_then_prepares_again():
    notification_ingest_group([events_for(make_event("ST001", id="p1"))], publish=lambda f: None)
    connection.connection.execute("DEALLOCATE ALL")  # as a pooler or a DISCARD would
    with pytest.raises(Exception, match="does not exist"):
        notification_ingest_group([events_for(make_event("ST001", id="p2"))], lambda f: None)
    assert not Notification.objects.filter(message_id="p2").exists()
    result = notification_ingest_group(
        [events_for(make_event("ST001", id="p2"))], publish=lambda f: None
    )
    assert [s.created for s in result[0]] == [True]


def test_a_failure_between_the_two_queries_rolls_back_and_leaves_the_connection_usable(
    monkeypatch,
):
    from notifications.ingest import postgresql

    def broken(*args):
        raise RuntimeError("derivation failed")

    monkeypatch.setattr(postgresql, "derive", broken)
    with pytest.raises(RuntimeError, match="derivation failed"):
        notification_ingest_group([events_for(make_event("ST001", id="mid"))], lambda f: None)
    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # Nothing of the group stayed: not its notification, nor its number.
    assert not Notification.objects.filter(message_id="mid").exists()
    monkeypatch.undo()
    stored = notification_ingest_group(
        [events_for(make_event("ST001", id="next"))], publish=lambda f: None
    )
    assert stored[0][0].notification.seq == 1
