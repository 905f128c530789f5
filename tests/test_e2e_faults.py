"""Faults and live status end to end, on real Daphne processes: the state snapshot and
its cursor under concurrent writes, resume of fault and status frames across a crash,
operators' actions with their access rules, and the actions' audit trail.

Everything goes over HTTP: events are posted with the ingest key, state and faults are
read and acted on with sessions and API keys, streams are read with the real SSE
client (tests/sse.py)."""

import itertools
import json
import queue
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.server import create_user, login
from tests.sse import SSEEvent, SSEStream

pytestmark = pytest.mark.e2e

ST1, ST2 = "ST001", "ST002"
DATA_FRAMES = ("notification", "status", "fault")
ACTIONS = ("acknowledge", "unacknowledge", "resolve")
_ids = itertools.count(1)


# --- helpers ---------------------------------------------------------------------------


def event(station=ST1, box="B1", connector="1", fault_type="GroundFailure", **fields) -> dict:
    """An event of this test module; `box` is the box's suffix, `connector` None for a
    box-level event."""
    body = {
        "id": f"fault-e2e-{next(_ids)}",
        "stationId": station,
        "boxId": f"{station}-{box}",
        "faultType": fault_type,
        "action": "SYSTEM_DATA_CHANGED",
        "message": "e2e",
    }
    if connector is not None:
        body["connectorId"] = connector
    body.update(fields)
    return body


def positions(cursor: str) -> dict[str, int]:
    """A cursor ("ST001:12" or "ST001:12,ST002:3") as {station: seq}."""
    parts = (part.rpartition(":") for part in cursor.split(","))
    return {code: int(seq) for code, _, seq in parts}


def cursor_seq(cursor: str, station: str = ST1) -> int:
    return positions(cursor)[station]


def seq_of(frame: SSEEvent, station: str = ST1) -> int:
    """The station's sequence number in a frame's id, which is the stream's cursor."""
    return cursor_seq(frame.id, station)


def open_stream(server, station=ST1, cursor: str | None = None, headers=None) -> SSEStream:
    """A station's stream (several stations' for a list) read with the all-station
    subscribe key, resumed from `cursor` if given."""
    extra = {"Last-Event-ID": cursor} if cursor is not None else {}
    path = (
        f"/api/sse/?station={','.join(station)}"
        if isinstance(station, list)
        else f"/api/sse/stations/{station}/"
    )
    stream = SSEStream(
        server.url + path, headers={**server.reader_headers, **extra, **(headers or {})}
    )
    assert stream.status_code == 200, stream.status_code
    return stream


def read_through(stream: SSEStream, last_seq: int, after: int, timeout: float = 20) -> list:
    """The stream's data frames until one carries `last_seq` (none if the stream starts
    there). Anything but stream-open and data frames (a reset, an error) fails."""
    frames: list[SSEEvent] = []
    deadline = time.monotonic() + timeout
    while (seq_of(frames[-1]) if frames else after) < last_seq:
        frame = stream.next(max(0.01, deadline - time.monotonic()))
        if frame.event in DATA_FRAMES:
            frames.append(frame)
        else:
            assert frame.event == "stream-open", (frame.event, frame.data)
    return frames


def more_frames(stream: SSEStream, seconds: float) -> list:
    """Data frames of any kind arriving within `seconds` (expected: none)."""
    deadline = time.monotonic() + seconds
    found = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = stream.events.get(timeout=left)
        except queue.Empty:
            break
        if frame.event in DATA_FRAMES:
            found.append(frame)
    return found


def get_state(server, station=ST1, headers=None) -> dict:
    """One station's state, or several stations' (a list) in one snapshot."""
    if isinstance(station, list):
        url = f"{server.url}/api/state?" + "&".join(f"station={code}" for code in station)
    else:
        url = f"{server.url}/api/stations/{station}/state"
    response = httpx.get(url, headers=headers or server.reader_headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def key_headers(key: str, **more) -> dict:
    return {"Authorization": f"Bearer {key}", **more}


def fault_url(server, fault_id: str, action: str | None = None) -> str:
    return f"{server.url}/api/faults/{fault_id}" + (f"/{action}" if action else "")


def act(server, fault_id: str, action: str, *, headers=None, cookies=None, note=None):
    """POST an action; a session caller passes its cookies and its CSRF header."""
    return httpx.post(
        fault_url(server, fault_id, action),
        json={"note": note} if note is not None else None,
        headers=headers or {},
        cookies=cookies,
        timeout=30,
    )


def session(cookies: dict, **more) -> dict:
    """The headers a browser's fetch() sends for a session user: the CSRF token."""
    return {"X-CSRFToken": cookies["csrftoken"], **more}


def open_fault(server, station=ST1, **fields) -> dict:
    """Post one fault-opening event and return the fault it opened, read from the state."""
    body = event(station, **fields)
    assert server.post(body).status_code == 201
    faults = [
        f
        for f in get_state(server, station)["faults"]
        if (f["boxId"], f["connectorId"], f["faultType"])
        == (body["boxId"], body.get("connectorId"), body["faultType"])
    ]
    assert len(faults) == 1, faults
    return faults[0]


def assert_error(response: httpx.Response, status: int, error: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) <= {"error", "message", "fields"} and {"error", "message"} <= set(body), body
    if error is not None:
        assert body["error"] == error, body


def applied(snapshot: dict, frames: list) -> dict:
    """The snapshot with the stream's status and fault frames applied, as a console
    would: unresolved faults by id, connector statuses, box statuses."""
    faults = {f["id"]: f for f in snapshot["faults"]}
    connectors = {(c["boxId"], c["connectorId"]): c for c in snapshot["connectors"]}
    boxes = {b["boxId"]: b["status"] for b in snapshot["boxes"]}
    for frame in frames:
        data = frame.json()
        if frame.event == "fault":
            if data["state"] == "resolved":
                faults.pop(data["id"], None)
            else:
                faults[data["id"]] = data
        elif frame.event == "status":
            if data.get("connectorId") is not None:
                connectors[(data["boxId"], data["connectorId"])] = data
            else:
                boxes[data["boxId"]] = data["status"]
    return {"faults": faults, "connectors": connectors, "boxes": boxes}


# --- 1. snapshot + cursor under concurrent writes ----------------------------------------


STATUSES = ["Available", "Preparing", "Charging", "SuspendedEV", "Finishing", "Faulted"]
FAULT_TYPES = ["GroundFailure", "OverVoltage"]


def random_event(rng: random.Random) -> dict:
    """A fault firing, a clear, a status change or a notice, on a few keys of ST001;
    some with a device timestamp a little in the past (out-of-order reports)."""
    box = rng.choice(["B1", "B2"])
    connector = rng.choice(["1", "2", None])
    fields = {"fault_type": rng.choice(FAULT_TYPES)}
    if rng.random() < 0.5:
        fields["code"] = "E42"
    roll = rng.random()
    if roll < 0.45:
        pass  # fires the fault of its key
    elif roll < 0.65:
        fields["cleared"] = True
    elif roll < 0.75:
        fields["action"] = "FAULT_CLEARED"
    else:
        fields["fault_type"] = rng.choice(["GENERAL", "NoError", "INFO"])
    if rng.random() < 0.6:
        fields["status"] = rng.choice(STATUSES)
    if rng.random() < 0.3:
        past = datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 5))
        fields["timestamp"] = past.isoformat().replace("+00:00", "Z")
    return event(ST1, box=box, connector=connector, **fields)


class Writers:
    """Threads writing to ST001 over HTTP until stopped: ingest posts (single events
    and small batches) and an operator acknowledging and unacknowledging faults."""

    def __init__(self, server, operate_key: str, posters: int = 2, seed: int = 0):
        self.server = server
        self.operate_key = operate_key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.posted = 0
        self.actions = 0
        self.problems: list = []
        self.threads = [
            threading.Thread(target=self._post, args=(seed + n,), daemon=True)
            for n in range(posters)
        ]
        self.threads.append(threading.Thread(target=self._operate, args=(seed + 99,), daemon=True))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def count(self) -> int:
        with self.lock:
            return self.posted

    def wait_for_posts(self, more: int, timeout: float = 30) -> None:
        target = self.count() + more
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert not self.problems, self.problems
            assert time.monotonic() < deadline, f"posting stalled at {self.count()}"
            time.sleep(0.02)

    def _post(self, seed: int):
        rng = random.Random(seed)
        headers = key_headers(self.server.ingest_key)
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                batch = [random_event(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
                body = batch if len(batch) > 1 else batch[0]
                response = client.post("/api/event", json=body)
                if response.status_code != 201:
                    self.problems.append((response.status_code, response.text))
                    return
                with self.lock:
                    self.posted += len(batch)

    def _operate(self, seed: int):
        rng = random.Random(seed)
        headers = key_headers(self.operate_key)
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                faults = client.get(f"/api/stations/{ST1}/state").json()["faults"]
                if not faults:
                    time.sleep(0.02)
                    continue
                fault = rng.choice(faults)
                action = "acknowledge" if fault["state"] == "open" else "unacknowledge"
                response = client.post(f"/api/faults/{fault['id']}/{action}")
                # 409: the ingest resolved it between the read and the action.
                if response.status_code not in (200, 409):
                    self.problems.append((action, response.status_code, response.text))
                    return
                self.actions += response.status_code == 200


def test_snapshot_and_stream_from_its_cursor_miss_nothing_and_repeat_nothing(server):
    """The state snapshot's key guarantee, under concurrent posts, clears, status changes
    and operator actions: a client that loads GET /state and then streams from its
    cursor ends up, after applying the frames, with exactly the final state; and the
    stream carries every log entry after the cursor, once, in order (contiguous seqs:
    a hole would be a missed change, a repeat a change applied twice)."""
    operate_key = server.manage("createapikey", "e2e ops", "--scope", "operate").strip()
    # One snapshot of the six is of two stations (GET /api/state, a two-station stream
    # from its combined cursor); ST002 gets no writes, so its part must stay put.
    both = [ST1, ST2]
    taken: list[tuple[list | str, dict, SSEStream]] = []
    with Writers(server, operate_key, seed=7) as writers:
        for stations in [ST1, ST1, both, ST1, ST1, ST1]:
            writers.wait_for_posts(8)
            snapshot = get_state(server, stations)
            # Posts keep landing between the snapshot and the open: the stream must
            # replay them from the log, then hand over to live frames without a seam.
            stream = open_stream(server, stations, cursor=snapshot["cursor"])
            taken.append((stations, snapshot, stream))
        writers.wait_for_posts(8)
    assert not writers.problems, writers.problems
    assert writers.actions > 0  # the operator's actions were part of the mix

    final = {ST1: get_state(server), "both": get_state(server, both)}
    last = cursor_seq(final[ST1]["cursor"])
    assert cursor_seq(final["both"]["cursor"]) == last
    cursors = [cursor_seq(snapshot["cursor"]) for _, snapshot, _ in taken]
    assert len(set(cursors)) == len(cursors)  # every snapshot saw the log move on
    assert cursors[-1] < last

    for stations, snapshot, stream in taken:
        expected = applied(final["both" if stations == both else ST1], [])
        start = cursor_seq(snapshot["cursor"])
        frames = read_through(stream, last, after=start)
        frames += more_frames(stream, 0.3)
        seqs = [seq_of(frame) for frame in frames]
        assert seqs == list(range(start + 1, last + 1)), (start, last, seqs)
        assert {frame.event for frame in frames} == set(DATA_FRAMES)
        if stations == both:
            st2 = cursor_seq(snapshot["cursor"], ST2)
            assert {cursor_seq(frame.id, ST2) for frame in frames} == {st2}
            assert {frame.json()["stationId"] for frame in frames} == {ST1}
        got = applied(snapshot, frames)
        assert got["faults"] == expected["faults"], f"snapshot at {start}"
        assert got["connectors"] == expected["connectors"], f"snapshot at {start}"
        assert got["boxes"] == expected["boxes"], f"snapshot at {start}"
        stream.close()
    # The comparison had something to compare: faults were open at the end or in between.
    assert any(snapshot["faults"] for _, snapshot, _ in taken) or final[ST1]["faults"]


# --- 2. resume across a crash -------------------------------------------------------------


def test_resume_after_a_crash_replays_fault_and_status_frames_exactly_once(server):
    """A client that read part of the frames, then lost its server to kill -9, resumes
    with Last-Event-ID after the restart: every frame after its id, of every kind
    (notification, status, fault; a box's status; an operator's action), arrives
    once, in seq order, and the ones it had seen live replay identical from the log."""
    operate_key = server.manage("createapikey", "crash ops", "--scope", "operate").strip()
    stream = open_stream(server)
    stream.next_of("stream-open")

    e1 = event(box="B1", connector="1", fault_type="GroundFailure", status="Faulted")
    e2 = event(box="B1", connector="2", fault_type="OverVoltage", status="Unavailable")
    e3 = event(
        box="B1", connector="1", fault_type="GroundFailure", cleared=True, status="Available"
    )
    for body in (e1, e2, e3):
        assert server.post(body).status_code == 201
    live = read_through(stream, 9, after=0)
    assert [f.event for f in live] == ["notification", "status", "fault"] * 3
    assert [seq_of(f) for f in live] == list(range(1, 10))
    # The client got as far as e2's status frame when it lost the connection.
    remembered = live[4].id
    assert remembered == "ST001:5"
    overvoltage = live[5].json()

    server.kill()
    stream.close()
    server.start()

    e4 = event(box="B1", connector="2", fault_type="OverVoltage", status="Faulted")
    e5 = event(box="B2", connector=None, fault_type="InternalError", status="Unavailable")
    assert server.post(e4).status_code == 201
    assert server.post(e5).status_code == 201
    acknowledged = act(server, overvoltage["id"], "acknowledge", headers=key_headers(operate_key))
    assert acknowledged.status_code == 200, acknowledged.text
    e6 = event(box="B2", connector="1", fault_type="GENERAL")
    assert server.post(e6).status_code == 201
    last = cursor_seq(get_state(server)["cursor"])
    assert last == 17

    resumed = open_stream(server, cursor=remembered)
    frames = read_through(resumed, last, after=5)
    frames += more_frames(resumed, 0.5)

    assert [seq_of(f) for f in frames] == list(range(6, 18))
    assert [f.event for f in frames] == [
        "fault",  # e2's fault
        *("notification", "status", "fault"),  # e3: its clear
        *("notification", "status", "fault"),  # e4: after the restart
        *("notification", "status", "fault"),  # e5: a box-level status and fault
        "fault",  # the operator's acknowledge
        "notification",  # e6: a notice changes nothing else
    ]
    # What the client had seen live is replayed from the log exactly as it was.
    assert [(f.id, f.event, f.json()) for f in frames[:4]] == [
        (f.id, f.event, f.json()) for f in live[5:]
    ]
    data = [f.json() for f in frames]
    assert data[1]["id"] == e3["id"]
    assert (data[2]["connectorId"], data[2]["status"]) == ("1", "Available")
    assert (data[3]["state"], data[3]["resolvedBy"]) == ("resolved", f"event:{e3['id']}")
    assert data[4]["id"] == e4["id"]
    assert (data[5]["connectorId"], data[5]["status"]) == ("2", "Faulted")
    assert (data[6]["id"], data[6]["occurrences"], data[6]["state"]) == (
        overvoltage["id"],
        2,
        "open",
    )
    assert data[7]["id"] == e5["id"]
    assert data[8]["boxId"] == "ST001-B2" and "connectorId" not in data[8]
    assert data[8]["status"] == "Unavailable"
    assert (data[9]["boxId"], data[9]["connectorId"], data[9]["faultType"]) == (
        "ST001-B2",
        None,
        "InternalError",
    )
    assert data[10] == acknowledged.json()
    assert data[10]["acknowledgedBy"] == "key:crash ops"
    assert data[11]["id"] == e6["id"]
    resumed.close()


# --- 3. actions and who may take them ---------------------------------------------------


def test_fault_actions_their_access_rules_and_their_frames(server):
    """Acknowledge, unacknowledge and resolve through the API: who may (session users of
    the station with their CSRF token, operate keys within their stations), what the
    others get (403 without CSRF or with a read-only or ingest key, 404 for a fault of
    a station the caller cannot read, 409 once resolved), and that each real change is
    pushed at once to a watcher of the station while repeats push nothing."""
    f1 = open_fault(server, ST1, fault_type="GroundFailure")
    f2 = open_fault(server, ST2, fault_type="GroundFailure")
    create_user(server, "alice", [ST1])
    alice = login(server, "alice")
    ops_st1 = server.manage(
        "createapikey", "ops st1", "--scope", "operate", "--station", ST1
    ).strip()
    watcher = open_stream(server, ST1)
    opened_at = seq_of(watcher.next_of("stream-open"))

    # A session without its CSRF token is refused, and nothing changes.
    for action in ACTIONS:
        assert_error(act(server, f1["id"], action, cookies=alice), 403)
    assert httpx.get(fault_url(server, f1["id"]), cookies=alice).json() == f1

    # Alice acknowledges: the answer and the watcher's frame carry the same fault.
    started = time.monotonic()
    response = act(server, f1["id"], "acknowledge", cookies=alice, headers=session(alice))
    assert response.status_code == 200, response.text
    frame = watcher.next_of("fault", timeout=1.0)
    assert time.monotonic() - started < 1.0
    acked = response.json()
    assert acked["state"] == "acknowledged"
    assert acked["acknowledgedBy"] == "alice" and acked["acknowledgedAt"]
    changed = ("state", "acknowledgedBy", "acknowledgedAt")
    assert {k: v for k, v in acked.items() if k not in changed} == {
        k: v for k, v in f1.items() if k not in changed
    }
    assert frame.json() == acked
    assert seq_of(frame) == opened_at + 1

    # Repeating it changes nothing and pushes nothing.
    again = act(server, f1["id"], "acknowledge", cookies=alice, headers=session(alice))
    assert again.status_code == 200
    assert again.json() == acked
    assert watcher.quiet("fault", 0.5) == []

    # ST002 is not alice's: its fault does not exist for her; its state is forbidden.
    assert_error(httpx.get(fault_url(server, f2["id"]), cookies=alice), 404, "not_found")
    for action in ACTIONS:
        assert_error(
            act(server, f2["id"], action, cookies=alice, headers=session(alice)), 404, "not_found"
        )
    forbidden = httpx.get(f"{server.url}/api/stations/{ST2}/state", cookies=alice)
    assert_error(forbidden, 403, "forbidden")
    both = httpx.get(f"{server.url}/api/state?station={ST1}&station={ST2}", cookies=alice)
    assert_error(both, 403, "forbidden")
    assert both.json()["fields"] == {"station": [ST2]}
    assert httpx.get(f"{server.url}/api/stations/{ST1}/state", cookies=alice).status_code == 200

    # An operate key for ST001 only: ST002's fault does not exist for it either.
    ops = key_headers(ops_st1)
    assert_error(httpx.get(fault_url(server, f2["id"]), headers=ops), 404, "not_found")
    for action in ACTIONS:
        assert_error(act(server, f2["id"], action, headers=ops), 404, "not_found")

    # A subscribe key reads faults but may not act; an ingest key may not even read.
    reader = server.reader_headers
    assert httpx.get(fault_url(server, f1["id"]), headers=reader).json() == acked
    ingest = key_headers(server.ingest_key)
    assert_error(httpx.get(fault_url(server, f1["id"]), headers=ingest), 403)
    assert_error(httpx.get(f"{server.url}/api/stations/{ST1}/state", headers=ingest), 403)
    for action in ACTIONS:
        assert_error(act(server, f1["id"], action, headers=reader), 403)
        assert_error(act(server, f1["id"], action, headers=ingest), 403)
        assert_error(act(server, f1["id"], action), 401)  # no credentials at all
    assert_error(act(server, "999999", "acknowledge", headers=ops), 404, "not_found")

    # None of the refused calls changed anything or pushed anything.
    assert watcher.quiet("fault", 0.3) == []
    assert httpx.get(fault_url(server, f1["id"]), headers=reader).json() == acked
    assert httpx.get(fault_url(server, f2["id"]), headers=reader).json() == f2

    # The key unacknowledges, then acknowledges in its own name.
    response = act(server, f1["id"], "unacknowledge", headers=ops)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "open"
    assert response.json()["acknowledgedBy"] is None
    assert watcher.next_of("fault", timeout=1.0).json() == response.json()
    assert act(server, f1["id"], "unacknowledge", headers=ops).json() == response.json()
    assert watcher.quiet("fault", 0.5) == []
    response = act(server, f1["id"], "acknowledge", headers=ops)
    assert response.json()["acknowledgedBy"] == "key:ops st1"
    assert watcher.next_of("fault", timeout=1.0).json() == response.json()

    # Alice resolves it with a note.
    response = act(
        server, f1["id"], "resolve", cookies=alice, headers=session(alice), note="cable swapped"
    )
    assert response.status_code == 200, response.text
    resolved = response.json()
    assert resolved["state"] == "resolved"
    assert resolved["note"] == "cable swapped"
    assert resolved["resolvedBy"] == "alice" and resolved["resolvedAt"]
    assert watcher.next_of("fault", timeout=1.0).json() == resolved
    assert f1["id"] not in [f["id"] for f in get_state(server)["faults"]]

    # A resolved fault takes no more actions, from anyone: 409, the one error shape.
    for action in ACTIONS:
        for caller in ({"cookies": alice, "headers": session(alice)}, {"headers": ops}):
            conflict = act(server, f1["id"], action, note="too late", **caller)
            assert_error(conflict, 409, "conflict")
            assert set(conflict.json()) == {"error", "message"}
    assert watcher.quiet("fault", 0.5) == []
    assert httpx.get(fault_url(server, f1["id"]), headers=reader).json() == resolved
    watcher.close()


# --- 4. the audit trail ------------------------------------------------------------------


def test_every_action_is_recorded_with_who_when_from_where_and_why(server):
    """FaultAction rows, read in the server's own database: each real change is one row
    naming the actor (username or key:<name>), the client's address as the server saw
    it (a forged X-Forwarded-For is not believed), its User-Agent and its note; a
    repeated acknowledge and a refused action on the resolved fault record nothing."""
    fault = open_fault(server, ST1, box="B2", connector="2", fault_type="OverVoltage")
    create_user(server, "bob", [ST1])
    bob = login(server, "bob")
    key = server.manage("createapikey", "console", "--scope", "operate").strip()
    browser = {"User-Agent": "bob-browser/1.0", "X-Forwarded-For": "203.0.113.9"}
    console = key_headers(key, **{"User-Agent": "ops-console/2.0"})

    acked = act(
        server,
        fault["id"],
        "acknowledge",
        cookies=bob,
        headers=session(bob, **browser),
        note="on my way",
    )
    assert acked.status_code == 200, acked.text
    repeat = act(server, fault["id"], "acknowledge", cookies=bob, headers=session(bob, **browser))
    assert repeat.json() == acked.json()
    unacked = act(server, fault["id"], "unacknowledge", headers=console)
    assert unacked.status_code == 200, unacked.text
    resolved = act(server, fault["id"], "resolve", headers=console, note="fuse replaced")
    assert resolved.status_code == 200, resolved.text
    assert act(server, fault["id"], "resolve", headers=console).status_code == 409

    output = server.shell(
        "import json\n"
        "from faults.models import FaultAction\n"
        f"rows = FaultAction.objects.filter(fault_id={int(fault['id'])}).order_by('at', 'id')\n"
        "print(json.dumps([dict(action=r.action, actor=r.actor, at=r.at.isoformat(),\n"
        "    remote_addr=r.remote_addr, user_agent=r.user_agent, note=r.note) for r in rows]))\n"
    )
    rows = json.loads(output.strip().splitlines()[-1])
    at = [datetime.fromisoformat(row.pop("at")) for row in rows]
    assert rows == [
        {
            "action": "acknowledged",
            "actor": "bob",
            "remote_addr": "127.0.0.1",
            "user_agent": "bob-browser/1.0",
            "note": "on my way",
        },
        {
            "action": "unacknowledged",
            "actor": "key:console",
            "remote_addr": "127.0.0.1",
            "user_agent": "ops-console/2.0",
            "note": "",
        },
        {
            "action": "resolved",
            "actor": "key:console",
            "remote_addr": "127.0.0.1",
            "user_agent": "ops-console/2.0",
            "note": "fuse replaced",
        },
    ]
    # The trail's times are the fault's own.
    assert at[0] == datetime.fromisoformat(acked.json()["acknowledgedAt"])
    assert at[2] == datetime.fromisoformat(resolved.json()["resolvedAt"])
    assert at[0] <= at[1] <= at[2]
    assert resolved.json()["note"] == "fuse replaced"
