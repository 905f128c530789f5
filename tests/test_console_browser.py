"""The operator's console in real Chromium against a real Daphne (issue 12): the board,
the faults and acting on them from two browsers, the title and favicon in a background
tab, sound and desktop notifications, filters, a server outage, signing out in another
tab, and the phone layout. tests/browser.py runs the browser.

With DASHBOARD_SCREENSHOTS=<dir>, each state is saved as a screenshot (`shot`).
"""

import re
import shutil
import time
from types import SimpleNamespace

import httpx
import pytest

from tests.browser import (  # noqa: F401 (fixtures)
    RESUME_TIMEOUT_MS,
    WAIT_MS,
    StallingRelay,
    browser,
    create_operator,
    cursor,
    fault_items,
    feed_ids,
    new_page,
    open_dashboard,
    page,
    post,
    server,
    server_env,
    shot,
    status,
    wait_for_faults,
    wait_for_rows,
    wait_live,
    wait_live_on,
    withdraw_access,
)
from tests.conftest import make_event

pytestmark = pytest.mark.e2e

# The page believes it is in a background tab: another tab is in front.
BACKGROUND = """
Object.defineProperty(Document.prototype, 'visibilityState', {get: () => 'hidden'});
Object.defineProperty(Document.prototype, 'hidden', {get: () => true});
"""

# Records what the page asks of the Notification API and of WebAudio, through the APIs
# themselves: a fake Notification (the permission prompt answered "granted") and every
# OscillatorNode.start (the alert's tones) counted before the real one runs.
RECORD_ALERTS = """
window.__alerts = {notifications: [], permissionRequests: 0, tones: 0};
class RecordingNotification {
  constructor(title, options) {
    options = options || {};
    window.__alerts.notifications.push({title: title, body: options.body, tag: options.tag});
  }
  close() {}
}
// The browser remembers a site's permission across reloads.
RecordingNotification.permission = localStorage.getItem('test-permission') || 'default';
RecordingNotification.requestPermission = function () {
  window.__alerts.permissionRequests += 1;
  RecordingNotification.permission = 'granted';
  localStorage.setItem('test-permission', 'granted');
  return Promise.resolve('granted');
};
window.Notification = RecordingNotification;
const realStart = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function () {
  window.__alerts.tones += 1;
  return realStart.apply(this, arguments);
};
"""

RED = "rgb(198, 40, 40)"  # --error

# Holds the answers of the page's matching requests until the test lets them go, to play
# out races: window.__hold = {url: 'part of the URL', method: 'POST'} (method optional);
# window.__held counts the requests held; window.__release() hands their answers over.
HOLD_FETCH = """
window.__held = 0;
const waiting = [];
window.__release = () => { window.__hold = null; waiting.splice(0).forEach(go => go()); };
const realFetch = window.fetch;
window.fetch = function (url, options) {
  const answer = realFetch.apply(this, arguments);
  const hold = window.__hold;
  const method = (options && options.method) || 'GET';
  if (!hold || !String(url).includes(hold.url) || (hold.method && hold.method !== method)) {
    return answer;
  }
  window.__held += 1;
  return new Promise(resolve => waiting.push(() => resolve(answer)));
};
"""


# Holds the page's `fault` frames while window.__frames is an array (they queue there);
# window.__deliver() hands them over and stops holding.
HOLD_FAULT_FRAMES = """
window.__frames = null;
window.__deliver = () => { const queued = window.__frames || []; window.__frames = null;
  queued.forEach(go => go()); };
const realAdd = EventSource.prototype.addEventListener;
EventSource.prototype.addEventListener = function (type, listener, options) {
  const held = function (event) {
    if (type === 'fault' && window.__frames) window.__frames.push(() => listener.call(this, event));
    else listener.call(this, event);
  };
  return realAdd.call(this, type, held, options);
};
"""


def hold(page, url: str, method: str | None = None):
    page.evaluate(
        "hold => { window.__held = 0; window.__hold = hold; }", {"url": url, "method": method}
    )


def wait_held(page, count=1):
    page.wait_for_function("n => window.__held >= n", arg=count, timeout=RESUME_TIMEOUT_MS)


def notice(station="ST001", **fields):
    """An event that opens no fault (a notice), carrying e.g. a status."""
    return make_event(station, faultType="GENERAL_NOTICE", action="STATUS_CHANGED", **fields)


def connector(box: str, number: str) -> str:
    return f'#board .box[data-box="{box}"] .connector[data-connector="{number}"]'


def wait_attribute(page, selector: str, name: str, value: str, timeout=WAIT_MS):
    page.wait_for_function(
        "([s, n, v]) => document.querySelector(s)?.getAttribute(n) === v",
        arg=[selector, name, value],
        timeout=timeout,
    )


def background(page, selector: str) -> str:
    return page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor")


def operate_key(server) -> str:
    return server.manage("createapikey", "console tests", "--scope", "operate").strip()


def unresolved(server, station="ST001") -> list[dict]:
    response = httpx.get(
        f"{server.url}/api/stations/{station}/state", headers=server.reader_headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["faults"]


# --- 1. The board -------------------------------------------------------------------------


def test_the_board_colours_connectors_by_status_and_shows_an_offline_box_apart(server, page):
    post(server, notice(status="Charging"))  # before the page: in the snapshot
    open_dashboard(page, server, "?station=ST001")
    wait_live(page)
    assert page.get_attribute(connector("ST001-B1", "1"), "data-status") == "Charging"
    assert page.get_attribute(connector("ST001-B2", "2"), "data-status") == "unknown"

    post(
        server,
        notice(connectorId="2", status="Available"),
        notice(boxId="ST001-B2", connectorId="1", status="Unavailable"),
        # A box's own status (no connector): the box went silent.
        notice(boxId="ST001-B2", connectorId=..., status="Offline"),
    )
    wait_attribute(page, connector("ST001-B1", "2"), "data-status", "Available")
    wait_attribute(page, connector("ST001-B2", "1"), "data-status", "Unavailable")
    wait_attribute(page, '#board .box[data-box="ST001-B2"]', "data-status", "Offline")
    assert page.inner_text(connector("ST001-B1", "1") + " .connector-status") == "Charging"
    assert page.inner_text('#board .box[data-box="ST001-B2"] .box-status') == "Offline"

    colours = {
        "Charging": background(page, connector("ST001-B1", "1")),
        "Available": background(page, connector("ST001-B1", "2")),
        "Unavailable": background(page, connector("ST001-B2", "1")),
        "unknown": background(page, connector("ST001-B2", "2")),
    }
    assert len(set(colours.values())) == 4, colours
    offline_box = page.eval_on_selector(
        '#board .box[data-box="ST001-B2"]',
        "e => [getComputedStyle(e).borderTopStyle, getComputedStyle(e).backgroundColor]",
    )
    online_box = page.eval_on_selector(
        '#board .box[data-box="ST001-B1"]',
        "e => [getComputedStyle(e).borderTopStyle, getComputedStyle(e).backgroundColor]",
    )
    assert offline_box != online_box and offline_box[0] == "dashed", (offline_box, online_box)
    # Its connectors are struck through: nobody knows their state now.
    assert "repeating-linear-gradient" in page.eval_on_selector(
        connector("ST001-B2", "1"), "e => getComputedStyle(e).backgroundImage"
    )

    # A status change repaints the cell; a fault on the connector marks it.
    post(server, make_event("ST001", faultType="GroundFailure", status="Faulted"))
    wait_attribute(page, connector("ST001-B1", "1"), "data-status", "Faulted")
    assert background(page, connector("ST001-B1", "1")) == RED
    wait_attribute(page, connector("ST001-B1", "1"), "data-fault", "critical")
    shot(page, "desktop-board")


# --- 2. Faults, acted on from two browsers ------------------------------------------------------


def test_an_acknowledge_in_one_browser_shows_in_another_and_a_resolve_removes_it(
    server, page, new_page
):
    create_operator(server, "depot-a", ["ST001"])
    open_dashboard(page, server, "?station=ST001")
    other = new_page()
    open_dashboard(other, server, "?station=ST001", username="depot-a")
    wait_live(page)
    wait_live(other)

    warning = make_event("ST001", faultType="WeakSignal", boxId="ST001-B2")
    error = make_event("ST001", faultType="SYSTEM_ERROR")
    critical = make_event("ST001", faultType="GroundFailure", connectorId="2", code="E7")
    post(server, warning, error, error | {"id": error["id"] + "-again"}, critical)
    for tab in (page, other):
        wait_for_faults(tab, 3)
        tab.wait_for_function(
            "document.querySelector('#faults .sev-error .occurrences').textContent === '×2'",
            timeout=WAIT_MS,
        )
    items = fault_items(page)
    assert [i["severity"] for i in items] == ["critical", "error", "warning"]
    assert [i["state"] for i in items] == ["open"] * 3
    assert "GroundFailure" in items[0]["text"] and "E7" in items[0]["text"]
    assert "ST001 · ST001-B1 · connector 2" in items[0]["text"]
    assert "Not acknowledged" in items[0]["text"]
    assert re.search(r"first (just now|\d+ s ago)", items[0]["text"]), items[0]["text"]
    assert "×2" in items[1]["text"] and "once" in items[2]["text"]
    assert other.title() == "(3) Depot console · CGM"

    # The operator is on the critical one, with a note (text, never markup).
    critical_id = items[0]["id"]
    mine = page.locator(f'#faults .fault-item[data-id="{critical_id}"]')
    mine.locator(".note-input").fill("technician <b>on the way</b>")
    started = time.monotonic()
    mine.locator(".act-acknowledge").click()
    theirs = f'#faults .fault-item[data-id="{critical_id}"][data-state="acknowledged"]'
    other.wait_for_selector(theirs, timeout=WAIT_MS)
    print(f"acknowledge seen in the other browser after {time.monotonic() - started:.2f} s")
    text = other.inner_text(theirs)
    assert "Acknowledged by operator" in text
    assert "Note: technician <b>on the way</b>" in text
    assert other.locator("#faults b").count() == 0
    assert other.title() == "(2) Depot console · CGM"
    assert other.is_visible(theirs + " .act-unacknowledge")
    assert not other.is_visible(theirs + " .act-acknowledge")
    shot(page, "desktop-faults-acknowledged")

    # The other operator resolves the error: gone from both lists.
    error_id = items[1]["id"]
    other.click(f'#faults .fault-item[data-id="{error_id}"] .act-resolve')
    for tab in (page, other):
        wait_for_faults(tab, 2)
    assert [i["id"] for i in fault_items(page)] == [critical_id, items[2]["id"]]
    assert {f["id"] for f in unresolved(server)} == {critical_id, items[2]["id"]}

    # An action the server refuses is said on the fault, not swallowed: the other
    # operator loses the station; the stream ends and says so, and the critical fault
    # still on their screen can no longer be acted on.
    withdraw_access(server, "depot-a")
    other.wait_for_selector("#notice:not([hidden])", timeout=RESUME_TIMEOUT_MS)
    assert "access withdrawn" in other.inner_text("#notice")
    item = f'#faults .fault-item[data-id="{critical_id}"]'
    other.click(item + " .act-resolve")
    other.wait_for_selector(item + " .fault-error:not([hidden])", timeout=WAIT_MS)
    assert other.inner_text(item + " .fault-error") == (
        "Resolve failed: the fault is not visible to you any more"
    )
    # Shown for a moment, then the fault leaves the list: nothing left to act on.
    other.wait_for_selector(item, state="detached", timeout=WAIT_MS)
    assert {f["id"] for f in unresolved(server)} == {critical_id, items[2]["id"]}


# --- 3. Title and favicon in a background tab --------------------------------------------------


def act_elsewhere(server, fault_id: str, action: str) -> int:
    """Another operator (an operate key) acts on the fault; the answer's status."""
    response = httpx.post(
        f"{server.url}/api/faults/{fault_id}/{action}",
        headers={"Authorization": f"Bearer {operate_key(server)}"},
        timeout=30,
    )
    return response.status_code


def _console_with_a_fault(server, new_page, init_script):
    """A console on ST001, showing one open fault: the page and the fault's id."""
    post(server, make_event("ST001", faultType="SYSTEM_ERROR"))
    page = new_page(init_script=init_script)
    open_dashboard(page, server, "?station=ST001")
    wait_live(page)
    wait_for_faults(page, 1)
    return page, fault_items(page)[0]["id"]


def test_a_late_answer_to_an_action_never_brings_back_a_fault_a_frame_resolved(server, new_page):
    page, fault_id = _console_with_a_fault(server, new_page, HOLD_FETCH)

    # The acknowledge is done on the server; its answer is held in the page while
    # another operator resolves the fault and the frame takes it off the list.
    hold(page, "/api/faults/", "POST")
    page.click(f'#faults .fault-item[data-id="{fault_id}"] .act-acknowledge')
    wait_held(page)
    assert act_elsewhere(server, fault_id, "resolve") == 200
    wait_for_faults(page, 0)
    page.evaluate("window.__release()")
    page.wait_for_timeout(1000)
    assert fault_items(page) == []
    assert page.title() == "Depot console · CGM"


def test_acting_on_a_fault_resolved_meanwhile_says_why_and_takes_it_off_the_list(server, new_page):
    page, fault_id = _console_with_a_fault(server, new_page, HOLD_FAULT_FRAMES)

    # Resolved elsewhere, its frame not here yet: the page still offers to act on it.
    page.evaluate("window.__frames = []")
    assert act_elsewhere(server, fault_id, "resolve") == 200
    page.wait_for_function("window.__frames.length === 1", timeout=WAIT_MS)
    item = f'#faults .fault-item[data-id="{fault_id}"]'
    page.click(item + " .act-acknowledge")  # answered 409
    page.wait_for_selector(item + " .fault-error:not([hidden])", timeout=WAIT_MS)
    assert "already resolved" in page.inner_text(item + " .fault-error")
    wait_for_faults(page, 0)  # after a few seconds, without the frame
    page.evaluate("window.__deliver()")
    page.wait_for_timeout(500)
    assert fault_items(page) == []


def test_an_answer_for_a_station_no_longer_selected_is_ignored(server, new_page):
    page = new_page(init_script=HOLD_FETCH)
    open_dashboard(page, server, "?station=ST001&station=ST002")
    wait_live_on(page, 2)
    # Opened live: the badge poll has never counted ST002.
    post(server, make_event("ST002", faultType="SYSTEM_ERROR"))
    wait_for_faults(page, 1)
    fault_id = fault_items(page)[0]["id"]

    hold(page, "/api/faults/", "POST")
    page.click(f'#faults .fault-item[data-id="{fault_id}"] .act-acknowledge')
    wait_held(page)
    page.uncheck("#station-list input[value=ST002]")
    wait_live_on(page, 1)
    page.evaluate("window.__release()")
    page.wait_for_timeout(1000)
    # No fault of an unticked station, and no error on the page (new_page checks).
    assert fault_items(page) == []
    assert page.inner_text('.badges[data-station="ST002"]') == ""


def _favicon_pixel(page) -> list[int]:
    """The colour the favicon was drawn with (its left edge, outside the digits)."""
    return page.evaluate(
        """() => new Promise(resolve => {
            const img = new Image();
            img.onload = () => {
                const c = document.createElement('canvas');
                c.width = c.height = 32;
                const g = c.getContext('2d');
                g.drawImage(img, 0, 0);
                resolve(Array.from(g.getImageData(4, 16, 1, 1).data));
            };
            img.src = document.querySelector('#favicon').href;
        })"""
    )


def test_the_title_and_favicon_count_unacknowledged_faults_with_the_page_in_the_background(
    server, new_page
):
    console = new_page(init_script=BACKGROUND)
    open_dashboard(console, server, "?station=ST001&station=ST002")
    wait_live(console)
    front = console.context.new_page()  # another tab, in front
    front.goto("about:blank")
    front.bring_to_front()
    assert console.evaluate("document.hidden") is True
    assert console.title() == "Depot console · CGM"
    assert console.get_attribute("#favicon", "data-count") == "0"

    # 30 events while the operator looks elsewhere: 29 distinct error faults (a code each)
    # and a notice that opens none.
    events = [make_event("ST001", code=f"E{n}") for n in range(29)] + [notice("ST002")]
    post(server, *events)
    console.wait_for_function(
        "document.title === '(29) Depot console · CGM'", timeout=RESUME_TIMEOUT_MS
    )
    assert console.get_attribute("#favicon", "data-count") == "29"
    assert console.get_attribute("#favicon", "href").startswith("data:image/png;base64,")
    red, green, blue, alpha = _favicon_pixel(console)
    assert alpha > 200 and red > 150 and green < 80 and blue < 80, (red, green, blue, alpha)
    # The station picker's badge counts ST001's error faults.
    assert console.inner_text('.badges[data-station="ST001"] .sev-error') == "29"

    # Someone acknowledges one (an operate key, elsewhere): the count follows.
    first = unresolved(server)[0]["id"]
    response = httpx.post(
        f"{server.url}/api/faults/{first}/acknowledge",
        headers={"Authorization": f"Bearer {operate_key(server)}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    console.wait_for_function("document.title === '(28) Depot console · CGM'", timeout=WAIT_MS)
    assert console.get_attribute("#favicon", "data-count") == "28"
    assert console.evaluate("document.hidden") is True


# --- 3. Sound and desktop notification ------------------------------------------------------


def test_new_critical_faults_beep_and_notify_only_when_opted_in(server, new_page):
    console = new_page(init_script=BACKGROUND + RECORD_ALERTS)
    open_dashboard(console, server, "?station=ST001")
    wait_live(console)

    def recorded():
        return console.evaluate("window.__alerts")

    # Not opted in: a critical fault makes no sound and no notification.
    before = make_event("ST001", faultType="OverVoltage")
    post(server, before)
    wait_for_faults(console, 1)
    assert recorded() == {"notifications": [], "permissionRequests": 0, "tones": 0}

    console.check("#pref-sound")
    console.check("#pref-desktop")
    console.wait_for_function("window.__alerts.permissionRequests === 1", timeout=WAIT_MS)
    assert console.is_checked("#pref-desktop")

    # An error and a repeat of the known critical one: still nothing.
    post(server, make_event("ST001", faultType="SYSTEM_ERROR"), before | {"id": "again-1"})
    console.wait_for_function(
        "document.querySelectorAll('#faults .fault-item').length === 2"
        " && document.querySelector('#faults .sev-critical .occurrences').textContent === '×2'",
        timeout=WAIT_MS,
    )
    assert recorded()["notifications"] == [] and recorded()["tones"] == 0

    # A new critical fault: one notification naming it, and the alert's two tones.
    new = make_event("ST001", faultType="GroundFailure", boxId="ST001-B2", connectorId="2")
    post(server, new)
    console.wait_for_function("window.__alerts.notifications.length === 1", timeout=WAIT_MS)
    calls = recorded()
    assert calls["notifications"][0]["title"] == "Critical fault at ST001"
    assert calls["notifications"][0]["body"] == "GroundFailure at ST001 · ST001-B2 · connector 2"
    assert calls["tones"] == 2

    # The choice is remembered: after a reload no new prompt, and a new one still alerts.
    console.reload()
    wait_live(console)
    assert console.is_checked("#pref-sound") and console.is_checked("#pref-desktop")
    post(server, make_event("ST001", faultType="HighTemperature", code="T1"))
    console.wait_for_function("window.__alerts.notifications.length === 1", timeout=WAIT_MS)
    assert console.evaluate("window.__alerts.permissionRequests") == 0
    assert "HighTemperature" in console.evaluate("window.__alerts.notifications[0].body")

    # Opted out again: silence.
    console.uncheck("#pref-sound")
    console.uncheck("#pref-desktop")
    post(server, make_event("ST001", faultType="PowerSwitchFailure"))
    wait_for_faults(console, 5)
    assert console.evaluate("window.__alerts.notifications.length") == 1


# --- 4. Colour from severity, and the filters ------------------------------------------------


def test_colour_comes_from_severity_and_the_filters_narrow_faults_and_log(server, page):
    open_dashboard(page, server, "?station=ST001")
    wait_live(page)
    no_error = make_event("ST001", faultType="NO_ERROR", message="fault cleared")
    lock = make_event("ST001", faultType="CONNECTOR_LOCK_FAILURE", status="Faulted")
    weak = make_event("ST001", faultType="WeakSignal", boxId="ST001-B2")
    info = make_event("ST001", faultType="LocalListConflict", connectorId="2")
    critical = make_event("ST001", faultType="GroundFailure", boxId="ST001-B2", connectorId="2")
    charging = notice(boxId="ST001-B2", connectorId="1", status="Charging", timestamp=_now())
    post(server, no_error, lock, weak, info, critical, charging)
    cleared = make_event("ST001", faultType="WeakSignal", boxId="ST001-B2", cleared=True)
    post(server, cleared)
    events = [no_error, lock, weak, info, critical, charging, cleared]
    wait_for_rows(page, events)
    wait_for_faults(page, 3)
    page.wait_for_function(
        "id => document.querySelector(`#feed tr[data-id='${id}']`).dataset.severity === 'cleared'",
        arg=cleared["id"],
        timeout=WAIT_MS,
    )

    def severity(event):
        return page.get_attribute(f'#feed tr[data-id="{event["id"]}"]', "data-severity")

    assert [severity(e) for e in events] == [
        "notice",
        "error",
        "warning",
        "info",
        "critical",
        "notice",
        "cleared",
    ]
    # "fault cleared" is never red; a lock failure is, whatever its spelling says.
    tag = '#feed tr[data-id="{}"] .fault'
    assert background(page, tag.format(lock["id"])) == RED
    assert background(page, tag.format(no_error["id"])) != RED
    assert background(page, f'#feed tr[data-id="{no_error["id"]}"]') in (
        "rgba(0, 0, 0, 0)",
        "rgb(255, 255, 255)",
    )
    # Device time beside receive time.
    cells = page.eval_on_selector_all(
        f'#feed tr[data-id="{charging["id"]}"] td', "cells => cells.map(c => c.textContent)"
    )
    assert re.fullmatch(r"\d\d:\d\d:\d\d", cells[0]) and re.fullmatch(r"\d\d:\d\d:\d\d", cells[1])
    shot(page, "desktop-all")

    # Severity: no warnings or infos, in the list and in the log.
    page.uncheck("#filters input[value=warning]")
    page.uncheck("#filters input[value=info]")
    assert [i["severity"] for i in fault_items(page)] == ["critical", "error"]
    assert feed_ids(page, visible=True) == [
        cleared["id"],
        charging["id"],
        critical["id"],
        lock["id"],
        no_error["id"],
    ]
    # Faults only: the rows that opened, raised or cleared one.
    page.check("#filters input[value=faults]")
    assert feed_ids(page, visible=True) == [cleared["id"], critical["id"], lock["id"]]
    shot(page, "desktop-filtered")
    # Status only: the rows that reported a status.
    page.check("#filters input[value=status]")
    page.check("#filters input[value=warning]")
    assert feed_ids(page, visible=True) == [charging["id"], lock["id"]]
    page.check("#filters input[value=all]")
    page.check("#filters input[value=info]")
    assert len(feed_ids(page, visible=True)) == len(events)


def _now() -> str:
    from datetime import UTC, datetime, timedelta

    # A device clock 90 s behind the server: device and receive time differ visibly.
    return (datetime.now(UTC) - timedelta(seconds=90)).isoformat()


# --- 5. Lost connection --------------------------------------------------------------------------


# A long retry hint keeps the browser from reconnecting before the test has posted.
@pytest.mark.parametrize("server_env", [{"CGM_SSE_RETRY_MS": "6000"}], ids=["retry-6s"])
def test_a_server_outage_shows_a_stale_banner_and_the_page_catches_up_exactly(server, page):
    open_dashboard(page, server, "?station=ST001")
    wait_live(page)
    first = make_event("ST001", faultType="SYSTEM_ERROR")
    post(server, first)
    wait_for_faults(page, 1)
    fault_id = fault_items(page)[0]["id"]

    server.kill()
    lost_at = time.time()
    page.wait_for_selector("#stale-banner:not([hidden])", timeout=WAIT_MS)
    banner = page.inner_text("#stale-banner")
    match = re.search(r"data may be stale since (\d\d):(\d\d):(\d\d)", banner)
    assert match, banner
    assert "stale" in page.get_attribute("body", "class")
    assert page.title().startswith("⚠ Stale · ")
    assert float(page.eval_on_selector("#board", "e => getComputedStyle(e).opacity")) < 0.6
    # Acting while the server is down fails loudly on the fault.
    page.click(f'#faults .fault-item[data-id="{fault_id}"] .act-acknowledge')
    error = f'#faults .fault-item[data-id="{fault_id}"] .fault-error'
    page.wait_for_selector(error + ":not([hidden])", timeout=WAIT_MS)
    assert "the server did not answer" in page.inner_text(error)
    shot(page, "desktop-offline-banner")
    assert time.time() - lost_at > 3  # the banner waits out short blips

    server.start()
    # Posted before the page has reconnected: the stream replays them from its cursor.
    after = [
        make_event("ST001", faultType="SYSTEM_ERROR"),  # a raise: ×2
        make_event("ST001", faultType="GroundFailure", connectorId="2", status="Faulted"),
    ]
    post(server, *after)
    page.wait_for_selector("#stale-banner", state="hidden", timeout=RESUME_TIMEOUT_MS)
    wait_live(page)
    wait_for_rows(page, after)
    wait_for_faults(page, 2)
    later = make_event("ST001", faultType="NO_ERROR")
    post(server, later)
    wait_for_rows(page, [later])

    assert feed_ids(page) == [later["id"], after[1]["id"], after[0]["id"], first["id"]]
    items = fault_items(page)
    assert [i["severity"] for i in items] == ["critical", "error"]
    assert "×2" in items[1]["text"]
    assert page.get_attribute(connector("ST001-B1", "2"), "data-status") == "Faulted"
    assert "stale" not in (page.get_attribute("body", "class") or "")
    assert page.title() == "(2) Depot console · CGM"
    # first: 1, 2 (open); the batch: 3, 4, then 5 (raise), 6 (status), 7 (open); later: 8.
    assert page.get_attribute("#status", "data-cursor") == "ST001:8"


@pytest.mark.parametrize("server_env", [{"CGM_SSE_HEARTBEAT_SECONDS": "1"}], ids=["heartbeat-1s"])
def test_a_stream_that_stalls_without_closing_shows_the_stale_banner_and_catches_up(server, page):
    relay = StallingRelay(server.port)
    try:
        open_dashboard(page, SimpleNamespace(url=relay.url), "?station=ST001")
        wait_live(page)
        relay.stall()  # no FIN, no RST: EventSource fires no error
        stalled_at = time.time()
        missed = make_event("ST001", faultType="SYSTEM_ERROR")
        post(server, missed)  # straight to the server: the page can't see it

        page.wait_for_selector("#stale-banner:not([hidden])", timeout=WAIT_MS)
        # 2.5 heartbeat intervals of silence, then the 4 s any lost connection waits out.
        assert time.time() - stalled_at > 4
        assert status(page) != "live"
        assert feed_ids(page) == []

        relay.resume()
        page.wait_for_selector("#stale-banner", state="hidden", timeout=RESUME_TIMEOUT_MS)
        wait_live(page)
        wait_for_rows(page, [missed])
        wait_for_faults(page, 1)
        assert cursor(page) == "ST001:2"  # the notification (1), the fault it opened (2)
    finally:
        relay.close()


def _restore(server, backup):
    """The server's database goes back to `backup` (copied while the server was down)."""
    server.kill()
    for path in server.workdir.glob("db.sqlite3*"):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy(path, server.workdir / path.name)


def test_a_stream_reset_never_lets_the_reload_roll_back_newer_live_changes(
    server, new_page, tmp_path
):
    page = new_page(init_script=HOLD_FETCH)
    open_dashboard(page, server, "?station=ST001")
    wait_live(page)
    kept = notice()
    post(server, kept)
    wait_for_rows(page, [kept])
    server.kill()
    backup = tmp_path / "backup"  # at ST001:1
    backup.mkdir()
    for path in server.workdir.glob("db.sqlite3*"):
        shutil.copy(path, backup / path.name)
    server.start()
    lost = [notice(), notice()]
    post(server, *lost)
    wait_for_rows(page, lost, timeout=RESUME_TIMEOUT_MS)

    # Back to the backup: the page's cursor (ST001:3) is ahead of the log, the stream
    # resets. The reload's history answer is held while a live change happens.
    _restore(server, backup)
    hold(page, "limit=50")
    server.start()
    wait_held(page)
    assert "ST001" in page.inner_text("#notice")
    live = make_event("ST001", faultType="GroundFailure", connectorId="2", status="Faulted")
    post(server, live)
    page.wait_for_timeout(500)  # the old page applied it live here
    page.evaluate("window.__release()")

    wait_live(page, timeout=RESUME_TIMEOUT_MS)
    wait_for_rows(page, [live])
    wait_for_faults(page, 1)
    page.wait_for_timeout(1000)  # nothing older comes after and undoes it
    assert [i["severity"] for i in fault_items(page)] == ["critical"]
    assert page.get_attribute(connector("ST001-B1", "2"), "data-status") == "Faulted"
    assert feed_ids(page) == [live["id"], kept["id"]]
    assert cursor(page) == "ST001:4"  # 1 (kept); the live event's notification, status, fault


# The page's stream without ?heartbeat=1: a server (an older one) that sends only
# comment lines, which EventSource hides.
NO_HEARTBEATS = """
const RealEventSource = window.EventSource;
window.EventSource = function (url, options) {
  return new RealEventSource(url.replace('&heartbeat=1', ''), options);
};
window.EventSource.prototype = RealEventSource.prototype;
Object.assign(window.EventSource, {CONNECTING: 0, OPEN: 1, CLOSED: 2});
"""


@pytest.mark.parametrize("server_env", [{"CGM_SSE_HEARTBEAT_SECONDS": "1"}], ids=["heartbeat-1s"])
def test_a_stream_without_heartbeats_is_not_taken_for_a_stalled_one(server, new_page):
    page = new_page(init_script=NO_HEARTBEATS)
    open_dashboard(page, server, "?station=ST001")
    wait_live(page)
    streams = []
    page.on("request", lambda r: streams.append(r.url) if "/api/sse/" in r.url else None)
    page.wait_for_timeout(5000)  # two silent periods of 2.5 s
    assert streams == []
    assert status(page) == "live"
    event = notice()
    post(server, event)
    wait_for_rows(page, [event])


# --- 5. Signing out ends the stream --------------------------------------------------------------


def test_signing_out_in_another_tab_ends_the_stream_and_the_page_says_so(server, new_page):
    console = new_page()
    open_dashboard(console, server, "?station=ST001")
    wait_live(console)
    other_tab = console.context.new_page()
    open_dashboard(other_tab, server)
    with other_tab.expect_navigation():
        other_tab.click("#logout button")

    console.wait_for_selector("#status[data-state=signed-out]", timeout=RESUME_TIMEOUT_MS)
    assert "You are signed out" in console.inner_text("#notice")
    assert console.get_attribute("#notice a", "href").startswith("/accounts/login/?next=")
    assert console.title().startswith("Signed out · ")
    shot(console, "desktop-signed-out")
    # Nothing asked of the server any more: no stream, no badge poll, no reconnect check.
    requests = []
    console.on("request", lambda r: None if r.url.startswith("data:") else requests.append(r.url))
    console.wait_for_timeout(7000)  # more than two retry intervals (3 s)
    assert requests == []
    # Nothing new arrives on the page.
    post(server, make_event("ST001"))
    console.wait_for_timeout(1000)
    assert feed_ids(console) == []


# --- 6. The phone layout --------------------------------------------------------------------------

OVERFLOW = """() => {
    const width = window.innerWidth;
    const out = [];
    for (const e of document.querySelectorAll('body *')) {
        const r = e.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) continue;
        if (r.right > width + 0.5 || r.left < -0.5) {
            out.push(`${e.tagName}.${e.className} ${Math.round(r.left)}..${Math.round(r.right)}`);
        }
    }
    return {out: out, scroll: document.documentElement.scrollWidth, width: width};
}"""


def _assert_fits(page):
    result = page.evaluate(OVERFLOW)
    assert result["out"] == [], result["out"][:10]
    assert result["scroll"] <= result["width"], result


def test_the_phone_layout_fits_390_px_with_cards_and_a_drawer(server, new_page):
    phone = new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True)
    # Codes as long as the models allow (64), with no place to break a line.
    long_station, long_box = "S" * 64, "B" * 64
    server.shell(
        "from stations.models import Station, Box, Connector\n"
        f"s = Station.objects.create(code={long_station!r}, name='N' * 200)\n"
        f"b = Box.objects.create(station=s, code={long_box!r})\n"
        f"Connector.objects.create(box=b, code={'C' * 64!r})\n"
    )
    post(
        server,
        notice(status="Charging"),
        make_event("ST001", faultType="CONNECTOR_LOCK_FAILURE_WITH_A_VERY_LONG_NAME", code="E7"),
        make_event("ST001", faultType="GroundFailure", connectorId="2", message="x" * 150),
        notice("ST002", boxId="ST002-B2", connectorId=..., status="Offline"),
        make_event(long_station, boxId=long_box, connectorId="C" * 64, code="X" * 64),
    )
    open_dashboard(phone, server, f"?station=ST001&station=ST002&station={long_station}")
    wait_live(phone)
    wait_for_faults(phone, 3)
    # Acknowledged by a key with a long name (100 characters, the most it may have).
    long_key = server.manage("createapikey", "K" * 100, "--scope", "operate").strip()
    long_fault = next(f["id"] for f in unresolved(server, long_station))
    response = httpx.post(
        f"{server.url}/api/faults/{long_fault}/acknowledge",
        headers={"Authorization": f"Bearer {long_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    phone.wait_for_selector(f'#faults .fault-item[data-id="{long_fault}"][data-state=acknowledged]')
    assert phone.evaluate("window.innerWidth") == 390
    _assert_fits(phone)
    # Sign out and the connection are on screen, the picker is not (it is a drawer).
    for selector in ("#logout button", "#status", "#drawer-toggle"):
        box = phone.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
    assert not phone.is_visible("#sidebar")
    # The log as cards: each row a block, each cell labelled.
    assert phone.eval_on_selector("#feed tbody tr", "e => getComputedStyle(e).display") == "block"
    assert not phone.is_visible("#feed thead")
    shot(phone, "phone-console")

    phone.click("#drawer-toggle")
    assert phone.is_visible("#sidebar")
    _assert_fits(phone)
    phone.check("input[value=ST003]")
    assert phone.inner_text("#drawer-count") == "4"
    shot(phone, "phone-drawer")
    phone.click("#drawer-close")
    assert not phone.is_visible("#sidebar")
    wait_live(phone)
    phone.wait_for_function(
        "document.querySelector('#status').dataset.cursor.split(',').length === 4",
        timeout=WAIT_MS,
    )
    _assert_fits(phone)

    # Acting works on the phone too.
    phone.locator("#faults .fault-item").first.locator(".act-acknowledge").click()
    phone.wait_for_selector(
        "#faults .fault-item:first-child[data-state=acknowledged]", timeout=WAIT_MS
    )
    _assert_fits(phone)
    shot(phone, "phone-acknowledged")

    # Filters: critical faults only, and only the log's fault rows.
    for severity in ("error", "warning", "info"):
        phone.uncheck(f"#filters input[value={severity}]")
    phone.check("#filters input[value=faults]")
    assert [i["severity"] for i in fault_items(phone)] == ["critical"]
    assert len(feed_ids(phone, visible=True)) == 1
    _assert_fits(phone)
    shot(phone, "phone-filtered")

    # The outage banner fits too, and Sign out stays on screen.
    server.kill()
    phone.wait_for_selector("#stale-banner:not([hidden])", timeout=WAIT_MS)
    _assert_fits(phone)
    box = phone.locator("#logout button").bounding_box()
    assert box and box["x"] + box["width"] <= 390, box
    shot(phone, "phone-offline-banner")
