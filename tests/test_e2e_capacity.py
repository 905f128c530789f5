"""Bounded resources and concurrent ingest, against a real Daphne on SQLite.

These assert correctness and bounds (threads, DB connections, nothing lost), not
speed: timings belong to the benchmark, not the test suite.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import make_event
from tests.server import DaphneServer
from tests.sse import SSEStream, every_event_counted, positions_per_station

pytestmark = pytest.mark.e2e

STREAMS = 300


async def open_raw_stream(server, path: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {server.subscribe_key}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def read_until(reader, marker: bytes, timeout: float = 20.0) -> bytes:
    buffer = b""
    async with asyncio.timeout(timeout):
        while marker not in buffer:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError(f"stream closed before {marker!r}; got {buffer[-300:]!r}")
            buffer += chunk
    return buffer


def test_open_streams_do_not_cost_a_thread_or_a_db_connection_each(tmp_path):
    server = DaphneServer(tmp_path, env={"CGM_SSE_DB_THREADS": "4"}).start()
    try:
        codes = [f"ST{n:03d}" for n in range(1, 13)]

        async def scenario():
            first = await open_raw_stream(server, "/api/sse/stations/ST001/")
            await read_until(first[0], b"stream-open")
            baseline_threads = server.threads()

            streams = [first]
            for n in range(1, STREAMS):
                code = codes[n % len(codes)]
                streams.append(await open_raw_stream(server, f"/api/sse/stations/{code}/"))
            await asyncio.gather(*(read_until(r, b"stream-open") for r, _ in streams[1:]))

            threads_open = server.threads()
            db_handles = server.open_db_files()

            # Every stream is live: one event per station reaches all of them.
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"{server.url}/api/event",
                    json=[make_event(code, id=f"cap-{code}") for code in codes],
                    headers={"Authorization": f"Bearer {server.ingest_key}"},
                )
                assert response.status_code == 201
            for index, (reader, _) in enumerate(streams):
                await read_until(reader, f'"cap-{codes[index % len(codes)]}"'.encode())

            for _, writer in streams:
                writer.close()
            return baseline_threads, threads_open, db_handles

        baseline, with_streams, db_handles = asyncio.run(scenario())

        print(
            f"threads with 1 stream: {baseline}; with {STREAMS}: {with_streams};"
            f" db handles: {db_handles}"
        )
        # The stream read pool (4) and the ingest's worker thread may start meanwhile;
        # nothing may grow with the number of streams.
        assert with_streams <= baseline + 6, (baseline, with_streams)
        assert db_handles <= 4 + 2, db_handles
    finally:
        server.stop()


def test_concurrent_posters_on_sqlite_lose_nothing(tmp_path):
    # One key posting 400 events at once: above the default per-key rate (200/s), which
    # is not what this test is about.
    server = DaphneServer(tmp_path, env={"CGM_INGEST_RATE": "10000/s"}).start()
    try:
        posters, per_poster = 16, 25
        stations = [f"ST{n:03d}" for n in range(1, 5)]
        query = "&".join(f"station={code}" for code in stations)
        stream = SSEStream(f"{server.url}/api/sse/?{query}", headers=server.reader_headers)
        stream.next_of("stream-open")
        barrier = threading.Barrier(posters)

        def poster(number: int) -> list[int]:
            statuses = []
            headers = {"Authorization": f"Bearer {server.ingest_key}"}
            with httpx.Client(timeout=60, headers=headers) as client:
                barrier.wait()
                for i in range(per_poster):
                    event = make_event(stations[(number + i) % len(stations)], id=f"p{number}-{i}")
                    statuses.append(client.post(f"{server.url}/api/event", json=event).status_code)
            return statuses

        with ThreadPoolExecutor(posters) as pool:
            statuses = [s for result in pool.map(poster, range(posters)) for s in result]

        total = posters * per_poster
        assert statuses.count(201) == total, {s: statuses.count(s) for s in set(statuses)}
        # Every event is the same fault key per station: its notification, and its
        # fault opened or raised (raises in one transaction are one frame). The stream
        # carries each station's whole log.
        delivered = stream.collect_log_until(every_event_counted(total), timeout=60)
        ids = [e.json()["id"] for e in delivered if e.event == "notification"]
        assert len(set(ids)) == total
        assert stream.quiet("notification", 0.5) == []
        # Per station, the stream saw 1, 2, 3, ... with no hole and no repeat.
        for seqs in positions_per_station(delivered).values():
            assert seqs == list(range(1, len(seqs) + 1))
        occurrences = {
            e.json()["stationId"]: e.json()["occurrences"] for e in delivered if e.event == "fault"
        }
        assert sum(occurrences.values()) == total  # every event counted on its fault
        assert "database is locked" not in server.log()
    finally:
        server.stop()
