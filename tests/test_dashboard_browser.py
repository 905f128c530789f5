"""The operators' console's feed in a real browser against a real Daphne: the log, the
picker, resuming after crashes and resets, and access (tests/browser.py has how the
browser is run; tests/test_console_browser.py the console's faults, board and alerts).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# The fixtures (browser, page, server, server_env) are imported from tests/browser.py.
from tests.browser import (  # noqa: F401
    CHROMIUM,
    RESUME_TIMEOUT_MS,
    WAIT_MS,
    BadGateway,
    _browser_problem,
    browser,
    create_operator,
    feed_ids,
    open_dashboard,
    page,
    post,
    row_cells,
    server,
    server_env,
    status,
    wait_for_rows,
    wait_live,
    wait_live_on,
    wait_not_live,
    withdraw_access,
)
from tests.conftest import make_event
from tests.server import ROOT

pytestmark = pytest.mark.e2e


def test_the_browser_check_agrees_with_the_machine_and_with_ensure_chromium():
    """What decides whether the tests below run (skip outside CI, fail in CI) must say
    what scripts/ensure-chromium.sh says: a broken detection fails here, never skips."""
    problem = _browser_problem()
    assert problem is None or (isinstance(problem, str) and problem.strip()), repr(problem)
    if os.environ.get("CI") == "true":
        assert problem is None, f"the dashboard browser tests must run in CI, but {problem}"
    executable = os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)
    if executable:
        assert problem is None, problem
        # Installed: the script only reports it (no install, no root needed).
        script = subprocess.run(
            ["bash", "scripts/ensure-chromium.sh"], cwd=ROOT, capture_output=True, text=True
        )
        assert script.returncode == 0, script.stderr
    if problem is None:
        assert executable, f"no problem reported, but {CHROMIUM} is not an executable file"


# --- Tests -----------------------------------------------------------------------------


def test_live_feed_shows_the_picked_stations_newest_first(server, page):
    open_dashboard(page, server, "?station=ST001&station=ST002")
    wait_live(page)
    assert page.is_checked("input[value=ST001]") and page.is_checked("input[value=ST002]")
    assert not page.is_checked("input[value=ST003]")

    other = make_event("ST003")
    st2 = make_event(
        "ST002",
        boxId="ST002-B2",
        connectorId="2",
        faultType="GENERAL_NOTICE",
        action="CONNECTOR_STATUS",
        message='<img src=x onerror="document.title=1"> & <b>not bold</b>',
        code="C-17",
    )
    st1 = make_event("ST001", faultType="GROUND_FAULT", message="Ground fault")
    # ST003 goes first: had the page subscribed to it, it would show before the others.
    post(server, other, st2, st1)
    wait_for_rows(page, [st2, st1])

    assert feed_ids(page) == [st1["id"], st2["id"]]
    cells = row_cells(page, st2)
    assert cells[0]  # receive time, local
    assert cells[1] == ""  # the event carried no device time
    assert cells[2:] == [
        "ST002",
        "ST002-B2",
        "2",
        "GENERAL_NOTICE",
        "CONNECTOR_STATUS",
        '<img src=x onerror="document.title=1"> & <b>not bold</b>',
        "C-17",
    ]
    # Data is text, never markup.
    assert page.locator("#feed img, #feed b").count() == 0
    # A fault stands out by its fault's severity (GROUND_FAULT: unmapped, so "error");
    # a notice does not.
    page.wait_for_selector(f'tr[data-id="{st1["id"]}"].sev-error', timeout=WAIT_MS)
    assert page.get_attribute(f'tr[data-id="{st2["id"]}"]', "data-severity") == "notice"
    assert page.inner_text("#status") == "live"
    # The page keeps the id of the last frame it handled (ST001's fault frame, ST002's
    # notification): in the status pill's tooltip, not in the header's text.
    page.wait_for_function(
        "document.querySelector('#status').dataset.cursor === 'ST001:2,ST002:1'", timeout=WAIT_MS
    )
    assert "ST001:2,ST002:1" in page.get_attribute("#status", "title")
    assert "ST001:2" not in page.inner_text("header")


def test_history_shows_on_load_and_a_reload_keeps_the_selection(server, page):
    before = [make_event("ST001"), make_event("ST002"), make_event("ST003"), make_event("ST001")]
    post(server, *before)

    open_dashboard(page, server, "?station=ST001&station=ST002")
    wait_for_rows(page, [before[0], before[1], before[3]])
    wait_live(page)
    assert feed_ids(page) == [before[3]["id"], before[1]["id"], before[0]["id"]]

    live = make_event("ST002", faultType="CONNECTOR_STATUS", action="STATUS_CHANGED")
    post(server, live)
    wait_for_rows(page, [live])
    assert feed_ids(page) == [live["id"], before[3]["id"], before[1]["id"], before[0]["id"]]

    page.reload()
    wait_live(page)
    wait_for_rows(page, [live])
    assert feed_ids(page) == [live["id"], before[3]["id"], before[1]["id"], before[0]["id"]]
    assert page.url.endswith("/?station=ST001&station=ST002")


def test_the_station_picker_filters_selects_and_keeps_the_url_in_step(server, page):
    open_dashboard(page, server)
    assert status(page) == "idle"
    assert page.is_visible("#feed-empty")

    page.fill("#station-filter", "st003")
    assert page.is_visible("input[value=ST003]")
    assert not page.is_visible("input[value=ST001]")
    page.check("input[value=ST003]")
    wait_live(page)
    assert page.url.endswith("/?station=ST003")
    assert page.inner_text("#selected-count") == "1 of 12"

    event = make_event("ST003")
    post(server, event)
    wait_for_rows(page, [event])

    page.fill("#station-filter", "")
    page.click("#select-shown")
    wait_live_on(page, 12)
    assert page.inner_text("#selected-count") == "12 of 12"
    assert page.url.endswith("/?" + "&".join(f"station=ST{n:03d}" for n in range(1, 13)))
    wait_for_rows(page, [event])  # from the history this time

    page.click("#clear-selection")
    page.wait_for_selector("#status[data-state=idle]", timeout=WAIT_MS)
    assert page.url == f"{server.url}/"
    assert feed_ids(page) == []


# A long retry hint keeps the browser from reconnecting before the test has posted.
@pytest.mark.parametrize("server_env", [{"CGM_SSE_RETRY_MS": "6000"}], ids=["retry-6s"])
def test_the_feed_resumes_after_a_server_crash_without_losing_or_repeating(server, page):
    open_dashboard(page, server, "?station=ST001")
    wait_live(page)
    first = make_event("ST001")
    post(server, first)
    wait_for_rows(page, [first])

    server.kill()
    wait_not_live(page)
    assert page.inner_text("#status") == "reconnecting…"

    server.start()
    # Posted at once, before the page has reconnected: the stream must replay them
    # from the page's cursor, not start from "now".
    after = [make_event("ST001"), make_event("ST001", faultType="POWER_FAULT")]
    post(server, *after)
    assert status(page) != "live"  # not yet reconnected: a 6 s retry hint

    wait_live(page, timeout=RESUME_TIMEOUT_MS)
    wait_for_rows(page, after, timeout=RESUME_TIMEOUT_MS)
    later = make_event("ST001")
    post(server, later)
    wait_for_rows(page, [later])

    # Each exactly once, newest first.
    assert feed_ids(page) == [later["id"], after[1]["id"], after[0]["id"], first["id"]]
    # first: notification 1, fault opened 2; the batch: notifications 3 and 4, a raise
    # (5) and POWER_FAULT's opening (6); later: 7 and a raise (8), the last frame.
    page.wait_for_function(
        "document.querySelector('#status').dataset.cursor === 'ST001:8'", timeout=WAIT_MS
    )


def test_after_the_browser_gives_up_the_page_reconnects_itself_from_its_cursor(server, page):
    open_dashboard(page, server, "?station=ST001&station=ST002")
    wait_live(page)
    first = make_event("ST002")
    post(server, first)
    wait_for_rows(page, [first])

    # The service goes down behind a proxy: every request now gets a 502, on which the
    # browser closes the EventSource for good.
    server.kill()
    proxy = BadGateway(server.port)
    try:
        page.wait_for_function(
            "document.querySelector('#status').textContent.startsWith('offline')",
            timeout=WAIT_MS,
        )
    finally:
        proxy.close()

    server.start()
    after = [make_event("ST001"), make_event("ST002")]
    post(server, *after)

    wait_live(page, timeout=RESUME_TIMEOUT_MS)
    wait_for_rows(page, after, timeout=RESUME_TIMEOUT_MS)
    later = make_event("ST001")
    post(server, later)
    wait_for_rows(page, [later])
    assert feed_ids(page) == [later["id"], after[1]["id"], after[0]["id"], first["id"]]


def _db_files(server) -> list[Path]:
    return sorted(server.workdir.glob("db.sqlite3*"))


def test_a_stream_reset_reloads_the_history_of_those_stations(server, page, tmp_path):
    open_dashboard(page, server, "?station=ST001&station=ST002")
    wait_live(page)
    kept = [make_event("ST001"), make_event("ST002")]
    post(server, *kept)
    wait_for_rows(page, kept)

    # A backup of the database at ST001:1 (taken while the server is down: SQLite's
    # WAL files belong with it, and the operator's session is in it).
    server.kill()
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in _db_files(server):
        shutil.copy(path, backup / path.name)
    server.start()
    lost = [make_event("ST001"), make_event("ST001")]
    post(server, *lost)
    wait_for_rows(page, lost, timeout=RESUME_TIMEOUT_MS)

    # The database goes back to that backup: the page's ST001 cursor (3) is now ahead
    # of the log (1), and ST001:2 will be a different event than the one on screen.
    server.kill()
    for path in _db_files(server):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy(path, server.workdir / path.name)
    server.start()

    page.wait_for_selector("#notice:not([hidden])", timeout=RESUME_TIMEOUT_MS)
    assert "ST001 (the server's log is behind this page)" in page.inner_text("#notice")
    wait_live(page, timeout=RESUME_TIMEOUT_MS)
    newer = make_event("ST001")  # ST001:2 again
    post(server, newer)
    wait_for_rows(page, [newer, *kept])
    # The rows of the lost timeline are gone; ST002 kept its row throughout.
    assert feed_ids(page) == [newer["id"], kept[1]["id"], kept[0]["id"]]


def test_an_operator_sees_only_their_stations_until_access_is_withdrawn(server, page):
    create_operator(server, "depot-a", ["ST001"])
    open_dashboard(page, server, "?station=ST001&station=ST002", username="depot-a")
    wait_live(page)
    assert page.eval_on_selector_all("#station-list input", "boxes => boxes.map(b => b.value)") == [
        "ST001"
    ]
    assert "Not available to you, ignored: ST002" in page.inner_text("main")
    event = make_event("ST001")
    post(server, event)
    wait_for_rows(page, [event])

    # Withdrawn while the page is open: the server ends the stream with a stream-error,
    # and the page says so and stops instead of reconnecting into 403s forever.
    withdraw_access(server, "depot-a")
    page.wait_for_selector("#notice:not([hidden])", timeout=RESUME_TIMEOUT_MS)
    assert "access withdrawn" in page.inner_text("#notice")
    assert "ST001" in page.inner_text("#notice")
    assert page.inner_text("#status") == "offline"
    assert feed_ids(page) == [event["id"]]  # what was shown stays on screen
