"""End to end against a real Daphne: POST over HTTP, read the stream with a real client."""

import time

import httpx
import pytest

from tests.conftest import make_event as any_event
from tests.server import DaphneServer
from tests.sse import SSEStream


def make_event(*args, **fields):
    """A notice (it opens no fault), so a station's log holds only these notifications
    and the cursors below read plainly; fault and status frames on the stream and in
    resume: tests/test_e2e_faults.py."""
    return any_event(*args, **{"faultType": "GENERAL", **fields})


pytestmark = pytest.mark.e2e


def open_stream(server, path="/api/sse/stations/ST001/", headers=None) -> SSEStream:
    stream = SSEStream(server.url + path, headers={**server.reader_headers, **(headers or {})})
    assert stream.status_code == 200, stream.status_code
    return stream


def test_the_stream_opens_with_cursor_retry_and_proxy_friendly_headers(server):
    stream = open_stream(server)

    opening = stream.next()

    assert stream.response_headers["content-type"].startswith("text/event-stream")
    assert stream.response_headers["cache-control"] == "no-cache"
    assert stream.response_headers["x-accel-buffering"] == "no"
    assert opening.event == "stream-open"
    assert opening.retry == 3000
    assert opening.id == "ST001:0"
    assert opening.json() == {"stations": ["ST001"], "cursor": "ST001:0"}
    stream.close()


def test_a_posted_event_reaches_the_station_stream_at_once(server):
    stream = open_stream(server)
    stream.next_of("stream-open")
    event = make_event("ST001", boxId="ST001-B2", connectorId="2")

    started = time.monotonic()
    response = server.post(event)
    received = stream.next_of("notification", timeout=5)
    elapsed = time.monotonic() - started

    assert response.status_code == 201
    data = received.json()
    assert data["id"] == event["id"]
    assert (data["stationId"], data["boxId"], data["connectorId"]) == ("ST001", "ST001-B2", "2")
    assert (data["faultType"], data["action"]) == (event["faultType"], event["action"])
    assert data["receivedAt"]
    assert received.id == "ST001:1"
    assert elapsed < 2.0  # generous; real latency is measured by the benchmark
    stream.close()


def test_a_station_stream_never_sees_another_stations_events(server):
    st1 = open_stream(server, "/api/sse/stations/ST001/")
    st2 = open_stream(server, "/api/sse/stations/ST002/")
    st1.next_of("stream-open")
    st2.next_of("stream-open")

    server.post(make_event("ST002"))
    server.post(make_event("ST001"))

    assert st1.next_of("notification").json()["stationId"] == "ST001"
    assert st2.next_of("notification").json()["stationId"] == "ST002"
    assert st1.quiet("notification", 0.5) == []
    assert st2.quiet("notification", 0.5) == []


def test_one_stream_can_follow_more_than_ten_stations(tmp_path):
    server = DaphneServer(tmp_path).start()
    try:
        codes = [f"ST{n:03d}" for n in range(1, 13)]
        query = "&".join(f"station={code}" for code in codes)
        stream = open_stream(server, f"/api/sse/?{query}")
        opening = stream.next_of("stream-open")
        assert opening.json()["stations"] == codes

        response = server.post([make_event(code) for code in codes])
        assert response.status_code == 201

        received = stream.collect("notification", 12)
        assert sorted(e.json()["stationId"] for e in received) == codes
        # The last id carries every station's position.
        assert sorted(received[-1].id.split(",")) == sorted(f"{code}:1" for code in codes)
    finally:
        server.stop()


def test_idle_streams_get_heartbeats(tmp_path):
    server = DaphneServer(tmp_path, env={"CGM_SSE_HEARTBEAT_SECONDS": "1"}).start()
    try:
        stream = open_stream(server)
        stream.next_of("stream-open")
        time.sleep(2.5)
        assert len(stream.comments) >= 2
        assert all(c.startswith(":") for c in stream.comments)
        # Without ?heartbeat=1 nothing else changes: no heartbeat event.
        assert stream.quiet("heartbeat", 0.1) == []
    finally:
        server.stop()


def test_heartbeat_1_turns_keep_alives_into_heartbeat_events_without_an_id(tmp_path):
    server = DaphneServer(tmp_path, env={"CGM_SSE_HEARTBEAT_SECONDS": "1"}).start()
    try:
        assert server.post([make_event("ST001"), make_event("ST001")]).status_code == 201
        stream = open_stream(
            server, "/api/sse/stations/ST001/?heartbeat=1", {"Last-Event-ID": "ST001:0"}
        )
        # One heartbeat right after the replay: the client knows at once they arrive.
        frames = [stream.next() for _ in range(4)]
        assert [(f.event, f.id) for f in frames] == [
            ("stream-open", "ST001:0"),
            ("notification", "ST001:1"),
            ("notification", "ST001:2"),
            ("heartbeat", None),  # no id: the client's Last-Event-ID stays put
        ]
        assert frames[-1].data == "{}"
        # Then one per interval, instead of the comment line.
        later = stream.next(timeout=3)
        assert (later.event, later.id, later.data) == ("heartbeat", None, "{}")
        assert stream.comments == []
    finally:
        server.stop()


def test_unknown_or_malformed_requests_get_clear_errors(server):
    unknown = httpx.get(server.url + "/api/sse/stations/NOPE/", headers=server.reader_headers)
    assert unknown.status_code == 404
    assert unknown.json()["fields"] == {"station": ["NOPE"]}

    none = httpx.get(server.url + "/api/sse/", headers=server.reader_headers)
    assert none.status_code == 400
    assert "station" in none.json()["fields"]

    bad_cursor = httpx.get(
        server.url + "/api/sse/stations/ST001/",
        headers={"Last-Event-ID": "garbage", **server.reader_headers},
    )
    assert bad_cursor.status_code == 400
    assert "Last-Event-ID" in bad_cursor.json()["fields"]


def test_last_event_id_replays_exactly_what_was_missed_then_continues_live(server):
    first = [make_event("ST001") for _ in range(3)]
    for event in first:
        assert server.post(event).status_code == 201
    stream = open_stream(server)
    cursor = stream.next_of("stream-open").id
    assert cursor == "ST001:3"
    stream.close()

    missed = [make_event("ST001") for _ in range(4)]
    server.post(missed)

    resumed = open_stream(server, headers={"Last-Event-ID": cursor})
    replayed = resumed.collect("notification", 4)
    assert [e.json()["id"] for e in replayed] == [e["id"] for e in missed]
    assert [e.id for e in replayed] == ["ST001:4", "ST001:5", "ST001:6", "ST001:7"]

    live = make_event("ST001")
    server.post(live)
    assert resumed.next_of("notification").json()["id"] == live["id"]
    assert resumed.quiet("notification", 0.5) == []


def test_a_replayed_notification_is_the_same_frame_as_the_live_one(server):
    # The replay reads the log with a plain cursor (notifications/log.py), the live
    # frame is rendered from the event as stored: the client must not tell them apart
    # (times, JSON, the equipment's codes). This server runs on SQLite, where they are
    # the same bytes; PostgreSQL's jsonb may reorder `extra`'s keys (notifications/wire.py).
    live = open_stream(server)
    cursor = live.next_of("stream-open").id
    events = [
        make_event("ST001", timestamp="2026-03-01T08:15:30.250+08:00", temperatureC=81.5,
                   status="Faulted", 位置={"層": 2}),
        make_event("ST001", boxId=..., connectorId=..., message="station-wide"),
    ]  # fmt: skip
    assert server.post(events).status_code == 201
    sent = live.collect("notification", 2)

    replayed = open_stream(server, headers={"Last-Event-ID": cursor}).collect("notification", 2)

    assert [(e.id, e.data) for e in replayed] == [(e.id, e.data) for e in sent]
    first = sent[0].json()
    assert first["timestamp"] == "2026-03-01T00:15:30.250000Z"
    assert first["extra"] == {"temperatureC": 81.5, "status": "Faulted", "位置": {"層": 2}}
    assert (first["boxId"], first["connectorId"]) == ("ST001-B1", "1")
    assert sent[1].json()["timestamp"] is None


def test_the_query_parameter_cursor_works_for_clients_without_headers(server):
    server.post([make_event("ST002") for _ in range(2)])
    stream = open_stream(server, "/api/sse/?station=ST002&lastEventId=ST002:1")
    replayed = stream.collect("notification", 1)
    assert replayed[0].id == "ST002:2"
    assert stream.quiet("notification", 0.5) == []


def test_resume_survives_a_server_crash_and_restart(server):
    stream = open_stream(server)
    stream.next_of("stream-open")
    before = [make_event("ST001") for _ in range(3)]
    server.post(before)
    delivered = stream.collect("notification", 3)
    cursor = delivered[-1].id

    server.kill()
    server.start()
    after = [make_event("ST001") for _ in range(2)]
    for event in after:
        assert server.post(event).status_code == 201

    resumed = open_stream(server, headers={"Last-Event-ID": cursor})
    replayed = resumed.collect("notification", 2)
    assert [e.json()["id"] for e in replayed] == [e["id"] for e in after]
    assert resumed.quiet("notification", 0.5) == []


def test_a_cursor_the_log_no_longer_covers_gets_an_explicit_reset(server):
    server.post([make_event("ST001") for _ in range(5)])
    # Nothing is old enough for a time-based prune here, so prune by sequence.
    output = server.manage("prune_notifications", "--station", "ST001", "--through-seq", "3")
    assert "3" in output

    stream = open_stream(server, headers={"Last-Event-ID": "ST001:1"})
    opening = stream.next_of("stream-open")
    reset = stream.next_of("stream-reset")
    assert reset.json() == {"stations": ["ST001"], "reasons": {"ST001": "pruned"}}
    assert opening.id == reset.id == "ST001:5"

    # A cursor ahead of the log (a database restored from backup) is reset too.
    ahead = open_stream(server, headers={"Last-Event-ID": "ST001:99"})
    assert ahead.next_of("stream-reset").json()["reasons"] == {"ST001": "unknown-cursor"}

    # Within what is kept, resume still works exactly.
    kept = open_stream(server, headers={"Last-Event-ID": "ST001:3"})
    assert [e.id for e in kept.collect("notification", 2)] == ["ST001:4", "ST001:5"]
