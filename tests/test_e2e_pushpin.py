"""Beyond one machine: Pushpin holds the streams, Django answers with GRIP.

Runs the real Pushpin (Debian's pushpin and zurl, installed by scripts/ensure-pushpin.sh)
in front of real Daphne processes.
"""

import ipaddress
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_event
from tests.server import DaphneServer
from tests.services import PushpinServer, descendant_pids
from tests.sse import SSEStream, every_event_counted, positions_per_station

pytestmark = pytest.mark.e2e

A, B = "ST001", "ST002"


@pytest.fixture
def pushpin_stack(tmp_path):
    """Pushpin in front of two Daphne workers on one database."""
    from tests.server import free_port

    ports = [free_port(), free_port()]
    # Debug log: the tests read Pushpin's own account of prev-id inconsistencies.
    pushpin = PushpinServer(tmp_path, origins=ports, log_level=3)
    # A small replay page: a longer resume pages through Pushpin's next link.
    env = {"GRIP_URL": pushpin.grip_url, "CGM_SSE_REPLAY_PAGE": "3"}
    first = DaphneServer(tmp_path, env=env)
    first.port = ports[0]
    second = DaphneServer(tmp_path, env=env, share_with=first)
    second.port = ports[1]
    first.start()
    second.start()
    pushpin.start(probe_headers=first.reader_headers)
    yield pushpin, first, second
    pushpin.stop()
    first.stop()
    second.stop()


def sequence_gaps(pushpin) -> int:
    """Times Pushpin saw a publish whose prev-id did not follow the stream's last id:
    the only case where it must call Django back to recover."""
    return pushpin.log().count("last ID inconsistency")


def next_link_calls(pushpin) -> list[str]:
    """The next-link requests Pushpin sent to Django (zurl's log of its requests)."""
    return [line for line in pushpin.log().splitlines() if "[zurl] IN" in line and "/next/" in line]


def test_pushpin_delivers_live_events_in_order_exactly_once(pushpin_stack):
    pushpin, first, second = pushpin_stack
    stream = SSEStream(
        f"{pushpin.url}/api/sse/?station={A}&station={B}", headers=first.reader_headers
    )
    assert stream.status_code == 200
    opening = stream.next_of("stream-open")
    assert opening.id == f"{A}:0,{B}:0"

    sent = []
    for n in range(10):
        event = make_event((A, B)[n % 2], message=f"{n * 10}% load")
        (first, second)[n % 3 % 2].post(event)
        sent.append(event)

    # Each event: its notification, then its fault opened or raised, through Pushpin.
    frames = stream.collect_log(20, timeout=15)
    received = [e for e in frames if e.event == "notification"]
    assert [e.json()["id"] for e in received] == [e["id"] for e in sent]
    assert received[-1].json()["message"] == "90% load"
    assert [e.event for e in frames] == ["notification", "fault"] * 10
    assert [e.json()["occurrences"] for e in frames if e.event == "fault"] == [
        1, 1, 2, 2, 3, 3, 4, 4, 5, 5,
    ]  # fmt: skip
    assert positions_per_station(frames) == {A: list(range(1, 11)), B: list(range(1, 11))}
    assert frames[-1].id == f"{A}:10,{B}:10"
    assert stream.quiet("notification", 0.5) == []
    # Contiguous ids mean Pushpin has no gap to recover from. On a quiet machine this
    # is 0; under heavy load Pushpin has been seen to recover once, which costs one
    # log read and loses nothing (the assertions above). Reported, not asserted.
    print(f"pushpin prev-id inconsistencies: {sequence_gaps(pushpin)}")


def test_pushpin_streams_resume_from_the_log_with_last_event_id(pushpin_stack):
    pushpin, first, _ = pushpin_stack
    events = [make_event(A) for _ in range(3)]
    first.post(events)

    stream = SSEStream(
        f"{pushpin.url}/api/sse/stations/{A}/",
        headers={**first.reader_headers, "Last-Event-ID": f"{A}:1"},
    )
    replayed = stream.collect("notification", 2)
    assert [e.json()["id"] for e in replayed] == [e["id"] for e in events[1:]]
    assert [e.id for e in replayed] == [f"{A}:2", f"{A}:3"]

    live = make_event(A)
    first.post(live)
    assert stream.next_of("notification").json()["id"] == live["id"]
    assert stream.quiet("notification", 0.5) == []


def test_a_long_resume_pages_through_pushpins_next_link(pushpin_stack):
    pushpin, first, _ = pushpin_stack
    events = [make_event(A) for _ in range(4)]
    for event in events:
        first.post(event)  # each: its notification and its fault change, 8 log entries

    headers = {**first.reader_headers, "Last-Event-ID": f"{A}:0"}
    stream = SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers=headers)
    frames = stream.collect_log(8, timeout=15)
    assert [e.id for e in frames] == [f"{A}:{n}" for n in range(1, 9)]
    received = [e.json()["id"] for e in frames if e.event == "notification"]
    assert received == [e["id"] for e in events]
    pages = [line for line in next_link_calls(pushpin) if f"/{A}:" in line]
    assert len(pages) == 2  # pages of 3: the 2nd and 3rd came through the next link

    live = make_event(A)
    first.post(live)
    assert stream.next_of("notification").json()["id"] == live["id"]
    assert stream.quiet("notification", 0.5) == []


def test_pushpin_streams_check_access_like_direct_ones(pushpin_stack):
    pushpin, first, _ = pushpin_stack
    key_a = first.manage("createapikey", "reader A", "--scope", "subscribe", "--station", A)
    headers = {"Authorization": f"Bearer {key_a.strip()}"}
    assert httpx.get(f"{pushpin.url}/api/sse/stations/{B}/", headers=headers).status_code == 403
    assert httpx.get(f"{pushpin.url}/api/sse/stations/{A}/").status_code == 401

    stream = SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers=headers)
    stream.next_of("stream-open")
    first.post(make_event(B))
    only_a = make_event(A)
    first.post(only_a)
    assert stream.next_of("notification").json()["id"] == only_a["id"]


def test_a_client_cannot_fake_pushpins_signature(pushpin_stack):
    _, first, _ = pushpin_stack
    # Straight to Django with a made-up Grip-Sig: not treated as proxied, so this is an
    # ordinary stream (200, held by Django), never a GRIP instruction.
    headers = {**first.reader_headers, "Grip-Sig": "forged"}
    with httpx.stream("GET", f"{first.url}/api/sse/stations/{A}/", headers=headers) as response:
        assert response.status_code == 200
        assert "Grip-Hold" not in response.headers
        assert "Grip-Channel" not in response.headers


def test_batches_across_stations_need_no_recovery_either(pushpin_stack):
    pushpin, first, second = pushpin_stack
    stream = SSEStream(
        f"{pushpin.url}/api/sse/?station={A}&station={B}", headers=first.reader_headers
    )
    stream.next_of("stream-open")
    batch = [make_event(A), make_event(B), make_event(A), make_event(B)]
    first.post(batch)
    later = [make_event(B), make_event(A)]
    second.post(later)

    # Order is promised within a station (DESIGN.md): each station's notifications in
    # the order they were posted, each before its fault change.
    frames = stream.collect_log(12, timeout=15)
    for station in (A, B):
        received = [
            e.json()["id"]
            for e in frames
            if e.event == "notification" and e.json()["stationId"] == station
        ]
        assert received == [e["id"] for e in batch + later if e["stationId"] == station]
    assert positions_per_station(frames) == {A: list(range(1, 7)), B: list(range(1, 7))}
    assert frames[-1].id == f"{A}:6,{B}:6"
    assert stream.quiet("notification", 0.5) == []


def test_no_two_streams_share_one_next_link_call(pushpin_stack):
    # Pushpin shares one origin request among concurrent calls with the same path and
    # Grip-Last, and a shared request that fails leaves the calls that join it later
    # unanswered for good: those streams would stall silently
    # (notifications/streams/pushpin.py). So each stream's calls carry a tag of its own.
    pushpin, first, _ = pushpin_stack
    # One caller, one station, the same position: the same next link for all three.
    streams = [
        SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers=first.reader_headers)
        for _ in range(3)
    ]
    for stream in streams:
        stream.next_of("stream-open")
    # A hint (what the relay sends after a failover) makes all three follow the link
    # at once, in one of Pushpin's batches.
    publish = f"http://127.0.0.1:{5561 + pushpin.offset}/publish/"
    hint = {"channel": f"events-{A}", "formats": {"http-stream": {"action": "hint"}}}
    assert httpx.post(publish, json={"items": [hint]}).status_code == 200
    deadline = time.monotonic() + 10
    while len(next_link_calls(pushpin)) < 3:
        assert time.monotonic() < deadline, (
            f"{len(next_link_calls(pushpin))} next-link requests reached Django for 3 streams"
        )
        time.sleep(0.1)
    # Two resuming from the same cursor, a replay longer than a page: their page links
    # (fetched before a stream holds any channel, so without Grip-Last) differ too.
    earlier = [make_event(A) for _ in range(2)]
    first.post(earlier)  # 4 log entries, pages of 3
    headers = {**first.reader_headers, "Last-Event-ID": f"{A}:0"}
    resuming = [SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers=headers) for _ in "ab"]
    for stream in resuming:
        assert [e.id for e in stream.collect_log(4)] == [f"{A}:{n}" for n in range(1, 5)]
    pages = {line.split("/next/")[1] for line in next_link_calls(pushpin) if f"/{A}:" in line}
    assert len(pages) == 2
    # Pushpin's own account (debug log): it never joined a call to another's request.
    assert "reusing proxysession" not in pushpin.log()

    event = make_event(A)
    first.post(event)
    for stream in streams:  # live from the start: the two earlier events, then this one
        received = [stream.next_of("notification").json()["id"] for _ in range(3)]
        assert received == [e["id"] for e in earlier + [event]]
    for stream in resuming:  # the earlier two came with the replay
        assert stream.next_of("notification").json()["id"] == event["id"]
    for stream in streams + resuming:
        stream.close()


def test_revoking_a_key_closes_the_streams_pushpin_holds_for_it(pushpin_stack):
    pushpin, first, _ = pushpin_stack
    key = first.manage("createapikey", "reader A", "--scope", "subscribe", "--station", A).strip()
    other = first.manage("createapikey", "reader B", "--scope", "subscribe").strip()
    revoked = SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers={"X-Api-Key": key})
    untouched = SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers={"X-Api-Key": other})
    revoked.next_of("stream-open")
    untouched.next_of("stream-open")
    # Pushpin calls every stream's next link one second after a channel's first
    # subscriber (engine.cpp sub_subscribed) and takes the stream's channels from the
    # answer; calls with the same path and positions share one origin request, hence
    # the caller in the link's path. Revocation must still cut only this caller's
    # stream once Pushpin has called back for both.
    deadline = time.monotonic() + 10
    while len({line.split("/next/")[1] for line in next_link_calls(pushpin)}) < 2:
        assert time.monotonic() < deadline, "Pushpin did not call both callers' next links"
        time.sleep(0.1)

    # A separate process (like an admin's), with the same settings: it tells Pushpin.
    first.manage("revokeapikey", key)

    assert revoked.ended(timeout=10)
    again = httpx.get(f"{pushpin.url}/api/sse/stations/{A}/", headers={"X-Api-Key": key})
    assert again.status_code == 401
    # Only that caller's streams were closed.
    event = make_event(A)
    first.post(event)
    assert untouched.next_of("notification").json()["id"] == event["id"]
    revoked.close()
    untouched.close()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, from /proc/net/tcp and
    tcp6 (IPv4 shown dotted, IPv6 as the kernel's hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:  # IPv4, little-endian hex
                    address = str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1]))
                found.add(address)
    return found


def pushpin_process(pushpin, *names: str) -> int:
    """The pid of one of Pushpin's processes (condure, zurl, ...) under its launcher:
    the first found with one of `names`."""
    for pid in descendant_pids(pushpin.process.pid):
        if Path(f"/proc/{pid}/comm").read_text().strip() in names:
            return pid
    raise AssertionError(f"no {' or '.join(names)} process under Pushpin's launcher")


def test_a_pushpin_that_dies_is_started_again_and_its_streams_resume(pushpin_stack):
    # Debian bookworm's connection manager (condure 1.9.1) can panic in a reconnect
    # storm, and Pushpin's runner then stops all of its processes (docs/SCALING.md,
    # fourteenth session). The launcher starts Pushpin again, as pushpin.service does;
    # a client resumes from its cursor and misses nothing posted meanwhile.
    import os
    import signal

    pushpin, first, _ = pushpin_stack
    stream = SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers=first.reader_headers)
    stream.next_of("stream-open")
    first.post(make_event(A))
    cursor = stream.collect_log(2)[-1].id  # the notification, then its fault
    assert cursor == f"{A}:2"

    # The connection manager: condure in Pushpin 1.36 (Debian bookworm), built into
    # Pushpin as pushpin-connmgr from 1.38.
    os.kill(pushpin_process(pushpin, "condure", "pushpin-connmgr"), signal.SIGKILL)
    assert stream.ended(timeout=15), "the stream Pushpin held did not end"
    missed = make_event(A)
    assert first.post(missed).status_code == 201  # Django takes it while Pushpin is down

    deadline = time.monotonic() + 30
    while True:
        try:
            resumed = SSEStream(
                f"{pushpin.url}/api/sse/stations/{A}/",
                headers={**first.reader_headers, "Last-Event-ID": cursor},
            )
            if resumed.status_code == 200:
                break
        except (httpx.HTTPError, TimeoutError):
            pass
        assert time.monotonic() < deadline, f"Pushpin did not come back:\n{pushpin.log()[-3000:]}"
        time.sleep(0.2)
    assert "run_pushpin: pushpin exited unexpectedly" in pushpin.log()
    assert pushpin.process.poll() is None

    # Timeouts for a loaded machine, right after Pushpin's start.
    replayed = resumed.collect("notification", 1, timeout=20)
    assert [e.json()["id"] for e in replayed] == [missed["id"]]
    live = make_event(A)
    first.post(live)
    assert resumed.next_of("notification", timeout=20).json()["id"] == live["id"]
    assert resumed.quiet("notification", 0.5) == []


def test_pushpin_listens_on_loopback_only(pushpin_stack):
    # Tests and launchers: clients and publishers on 127.0.0.1; a deployment opts into
    # other interfaces with run_pushpin.py --listen-address / --publish-address.
    pushpin, _, _ = pushpin_stack
    assert listening_addresses(pushpin.port) == {"127.0.0.1"}
    assert listening_addresses(5561 + pushpin.offset) == {"127.0.0.1"}


def test_only_pushpin_may_follow_a_next_link(pushpin_stack):
    pushpin, first, _ = pushpin_stack
    SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers=first.reader_headers).next_of(
        "stream-open"
    )
    deadline = time.monotonic() + 10
    while not next_link_calls(pushpin):
        assert time.monotonic() < deadline, "Pushpin did not call the next link"
        time.sleep(0.1)
    path = "/api/sse/next/" + next_link_calls(pushpin)[0].split("/next/")[1]
    # The same link, straight to Django (no Pushpin signature): there is no such stream.
    assert (
        httpx.get(f"{first.url}{path}", headers={"Grip-Last": f"events-{A}; last-id=0"}).status_code
        == 404
    )
    # Through Pushpin, with a forged caller: refused.
    forged = httpx.get(f"{pushpin.url}/api/sse/next/forged:sig/")
    assert forged.status_code == 400
    assert "Invalid next link" in forged.text


def test_heartbeat_1_behind_pushpin_sends_heartbeat_events_also_after_its_next_link(tmp_path):
    # The console opens with ?heartbeat=1 to judge silence: behind Pushpin too.
    from tests.server import free_port

    port = free_port()
    pushpin = PushpinServer(tmp_path, origins=[port], log_level=3)
    server = DaphneServer(
        tmp_path, env={"GRIP_URL": pushpin.grip_url, "CGM_SSE_HEARTBEAT_SECONDS": "1"}
    )
    server.port = port
    server.start()
    try:
        pushpin.start(probe_headers=server.reader_headers)
        server.post(make_event(A))
        stream = SSEStream(
            f"{pushpin.url}/api/sse/stations/{A}/?heartbeat=1",
            headers={**server.reader_headers, "Last-Event-ID": f"{A}:0"},
        )
        frames = [stream.next() for _ in range(4)]
        # The replay, then one heartbeat at once, without an id (Last-Event-ID stays).
        assert [(f.event, f.id) for f in frames] == [
            ("stream-open", f"{A}:0"),
            ("notification", f"{A}:1"),
            ("fault", f"{A}:2"),
            ("heartbeat", None),
        ]
        # Pushpin calls the stream's next link a second after it subscribed; its answer
        # sets the keep-alive again: still heartbeat events, never comment lines.
        deadline = time.monotonic() + 10
        while not next_link_calls(pushpin):
            assert time.monotonic() < deadline, "Pushpin did not call the next link"
            time.sleep(0.1)
        assert "/next/" in next_link_calls(pushpin)[0]
        later = [stream.next(timeout=3) for _ in range(3)]
        assert [(f.event, f.id, f.data) for f in later] == [("heartbeat", None, "{}")] * 3
        assert stream.comments == []

        # Without ?heartbeat=1: comment lines, as before, and no heartbeat events.
        plain = SSEStream(f"{pushpin.url}/api/sse/stations/{A}/", headers=server.reader_headers)
        plain.next_of("stream-open")
        time.sleep(2.5)
        assert plain.quiet("heartbeat", 0.1) == []
        assert plain.comments and all(c.startswith(":") for c in plain.comments)
    finally:
        pushpin.stop()
        server.stop()


@pytest.fixture
def pushpin_multi(tmp_path, pg_database):
    """The Pushpin size as deployed on one machine: scripts/run_multi.py (two Daphne
    workers and the Pushpin relay) on PostgreSQL and Redis, behind Pushpin."""
    from tests.server import free_port, start_run_multi
    from tests.services import RedisServer

    redis = RedisServer().start()
    pushpin = PushpinServer(tmp_path, origins=[free_port()], log_level=3)
    env = {"REDIS_URL": redis.url, "GRIP_URL": pushpin.grip_url}
    launcher = None
    try:
        launcher, port, banner, pids = start_run_multi(pg_database.url, env)
        pushpin.origins = [port]
        pushpin.start(probe_headers={"Authorization": f"Bearer {pg_database.subscribe_key}"})
        yield pushpin, port, banner, pids, pg_database
    finally:
        pushpin.stop()
        if launcher is not None:
            launcher.terminate()
            launcher.wait(20)
        redis.stop()


def test_every_workers_commits_reach_pushpin_from_one_relay_in_order(pushpin_multi):
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    pushpin, port, banner, pids, database = pushpin_multi
    assert "and the Pushpin relay" in banner
    headers = {"Authorization": f"Bearer {database.subscribe_key}"}
    stream = SSEStream(f"{pushpin.url}/api/sse/?station={A}&station={B}", headers=headers)
    stream.next_of("stream-open")
    time.sleep(1.5)  # Pushpin's refresh one second after a channel's first subscriber

    def post_from_both_workers(count: int) -> set[str]:
        # Four posters at once, a new connection for each post: the kernel spreads them
        # over both workers, which commit consecutive numbers of a station in turn.
        events = [make_event(A if n % 2 else B) for n in range(count)]

        def post(event: dict) -> int:
            return httpx.post(
                f"http://127.0.0.1:{port}/api/event",
                json=event,
                headers={"Authorization": f"Bearer {database.ingest_key}"},
            ).status_code

        with ThreadPoolExecutor(4) as posters:
            assert set(posters.map(post, events)) == {201}
        return {event["id"] for event in events}

    def logged_through() -> dict[str, int]:
        with psycopg.connect(database.url) as db:
            rows = db.execute(
                "SELECT code, log_seq FROM stations_station WHERE code IN (%s, %s)", [A, B]
            )
            return dict(rows.fetchall())

    def receive(posted: set[str], start: dict[str, int]) -> None:
        # Each event is its notification and its fault's change; raises committed in
        # one group come as one fault frame, so a station's numbers are counted from
        # the log, not from the events.
        frames = stream.collect_log_until(every_event_counted(len(posted)), timeout=30)
        frames += stream.quiet("fault", 1.0)  # a last fault frame still on its way
        received = [f.json()["id"] for f in frames if f.event == "notification"]
        assert sorted(received) == sorted(posted)  # each once
        through = logged_through()
        assert positions_per_station(frames) == {
            code: list(range(start[code] + 1, through[code] + 1)) for code in (A, B)
        }

    receive(post_from_both_workers(20), {A: 0, B: 0})
    assert sequence_gaps(pushpin) == 0  # in order: Pushpin never had to recover

    # The relay process dies (the last pid: run_multi lists it after the workers);
    # run_multi starts another, or a worker's standby takes the role.
    before = logged_through()
    os.kill(pids[-1], signal.SIGKILL)
    receive(post_from_both_workers(4), before)
