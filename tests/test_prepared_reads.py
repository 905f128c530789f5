"""The reads of every stream open, prepared on PostgreSQL (cgm/pg_statements.py `Read`):
the caller's key, the stations' log positions and the first replay page. Each is
PREPAREd on a connection the first time it runs there outside a transaction, then sent
as EXECUTE; they must answer exactly as their text does, and live beside the ingest's
own prepared statements on one session. These run in the PostgreSQL pass of
`make test` (DATABASE_URL set to PostgreSQL).
"""

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from access.models import ApiKey
from access.policy import find_key
from notifications.ingest.services import notification_ingest_group
from notifications.ingest.validation import validate_events
from notifications.log import PREPARED_MAX_STATIONS, log_entries_after, log_positions
from tests.conftest import make_event

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="PostgreSQL's prepared reads: run in the PostgreSQL pass of make test",
    ),
]

WIDE = PREPARED_MAX_STATIONS + 1
CODES = [f"ST{n:03d}" for n in range(1, WIDE + 1)]


@pytest.fixture(autouse=True)
def stations():
    call_command("demo_data", stations=WIDE, stdout=open("/dev/null", "w"))  # noqa: SIM115


def _fresh_session():
    connection.close()
    connection.close_pool()  # a new session: nothing prepared on it yet


def _prepared_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {name for (name,) in cursor.fetchall()}


def _ingest(*events):
    valid, errors = validate_events(list(events), batch=True)
    assert not errors
    return notification_ingest_group([valid], publish=lambda frames: None)


def _an_opens_reads(raw_key: str):
    """What a stream open reads: its key, two stations' positions, then what it missed
    on one of them (fault and status changes and notifications, from the start); and
    the Pushpin relay's read of that station, up to its second entry."""
    api_key = find_key(raw_key, cached=False)
    positions = log_positions(["ST001", "ST002"])
    after = {positions["ST001"].station_id: ("ST001", 0)}
    page = log_entries_after(after, 100)
    relayed = log_entries_after(after, 100, {positions["ST001"].station_id: 2})
    assert relayed == page[:2]
    return api_key.pk, positions, page


def test_an_opens_reads_are_prepared_at_first_use_and_answer_as_their_text(settings):
    _, raw_key = ApiKey.issue(name="reader", scope="subscribe", all_stations=True)
    _ingest(
        make_event("ST001", id="p-1"),
        make_event("ST001", id="p-2"),  # the same fault again: raised
        make_event("ST002", id="p-3"),
    )
    _fresh_session()
    first = _an_opens_reads(raw_key)
    names = {"cgm_active_key", "cgm_positions_2", "cgm_page_1", "cgm_page_through_1"}
    assert names <= _prepared_names()
    with CaptureQueriesContext(connection) as sent:
        again = _an_opens_reads(raw_key)
    assert [query["sql"].split("(")[0] for query in sent.captured_queries] == [
        "EXECUTE cgm_active_key",
        "EXECUTE cgm_positions_2",
        "EXECUTE cgm_page_1",
        "EXECUTE cgm_page_through_1",
    ]

    settings.CGM_PG_PREPARE = False  # as behind a pooler in transaction mode
    _fresh_session()
    as_text = _an_opens_reads(raw_key)
    assert _prepared_names() == set()

    assert first == again == as_text
    _, positions, page = first
    assert positions["ST001"].last_seq == len(page) >= 3  # notifications and changes
    assert [item.seq for item in page] == list(range(1, len(page) + 1))


def test_a_read_inside_a_transaction_is_not_prepared_there():
    # A PREPARE that failed inside a caller's transaction would break it: the read runs
    # as text there, and is prepared at its first use outside one.
    _fresh_session()
    with transaction.atomic():
        assert "ST001" in log_positions(["ST001"])
        assert "cgm_positions_1" not in _prepared_names()
    assert "ST001" in log_positions(["ST001"])
    assert "cgm_positions_1" in _prepared_names()


def test_a_session_that_lost_its_prepared_reads_fails_one_read_then_prepares_again():
    expected = log_positions(["ST001"])
    connection.connection.execute("DEALLOCATE ALL")  # as a pooler or a DISCARD would
    with pytest.raises(DatabaseError, match="does not exist"):
        log_positions(["ST001"])
    assert log_positions(["ST001"]) == expected
    assert "cgm_positions_1" in _prepared_names()


@pytest.mark.parametrize("count", [2, PREPARED_MAX_STATIONS, WIDE])
def test_reads_of_several_stations_answer_alike_prepared_or_not(count):
    # Positions are prepared up to PREPARED_MAX_STATIONS, wider ones run as text; the
    # page of several stations always runs as text (log.py _page_read says why). Both
    # the stream's page and the Pushpin relay's (`through`: up to the announced numbers).
    codes = CODES[:count]
    _ingest(*(make_event(code, id=f"wide-{code}-{n}") for code in codes for n in range(2)))
    _fresh_session()
    positions = log_positions(codes)
    assert set(positions) == set(codes)
    after = {position.station_id: (code, 0) for code, position in positions.items()}
    page = log_entries_after(after, 1000)
    assert {item.station_code for item in page} == set(codes)
    assert len(page) == sum(position.last_seq for position in positions.values())
    through = {position.station_id: 2 for position in positions.values()}
    cut = log_entries_after(after, 1000, through)
    assert [(item.station_code, item.seq) for item in cut] == [
        (item.station_code, item.seq) for item in page if item.seq <= 2
    ]
    assert len(cut) == 2 * count
    names = _prepared_names()
    assert (f"cgm_positions_{count}" in names) == (count <= PREPARED_MAX_STATIONS)
    assert not {name for name in names if name.startswith("cgm_page")}


def test_the_ingest_and_the_reads_share_a_session_in_either_order():
    # Whichever comes first sets the session up (DEALLOCATE ALL clears what a failed
    # attempt left); what comes second only adds its own statements, so neither wipes
    # the other's (the ingest would then fail its next group).
    _fresh_session()
    log_positions(["ST001"])
    _ingest(make_event("ST001", id="reads-first"))
    _ingest(make_event("ST001", id="reads-first-2"))
    assert {"cgm_positions_1", "cgm_ingest"} <= _prepared_names()

    _fresh_session()
    _ingest(make_event("ST002", id="ingest-first"))
    assert log_positions(["ST002"])["ST002"].last_seq >= 1
    stored = _ingest(make_event("ST002", id="ingest-first-2"))
    assert [s.created for s in stored[0]] == [True]
    assert {"cgm_positions_1", "cgm_ingest"} <= _prepared_names()
