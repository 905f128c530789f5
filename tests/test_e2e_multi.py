"""One machine, several cores: Daphne workers on PostgreSQL, fanned out over Redis.

Real processes throughout: the machine's PostgreSQL, a private redis-server that the
tests stop and start again, several Daphne workers, real HTTP clients.
"""

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import make_event
from tests.server import DaphneServer, start_run_multi
from tests.services import (
    RedisServer,
    pg_connections,
)
from tests.sse import SSEStream, every_event_counted, positions_per_station

pytestmark = pytest.mark.e2e

A, B = "ST001", "ST002"


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def workers(tmp_path, pg_database, redis_server):
    database = pg_database
    env = {"REDIS_URL": redis_server.url, "DB_POOL_MAX": "6"}
    started = [DaphneServer(tmp_path, env=env, database=database).start() for _ in range(2)]
    yield started
    for worker in started:
        worker.stop()


def stream(worker, *codes) -> SSEStream:
    query = "&".join(f"station={code}" for code in codes or (A,))
    opened = SSEStream(f"{worker.url}/api/sse/?{query}", headers=worker.reader_headers)
    assert opened.status_code == 200
    opened.next_of("stream-open")
    return opened


def test_an_event_posted_to_any_worker_reaches_streams_on_every_worker(workers):
    first, second = workers
    on_first, on_second = stream(first), stream(second)
    time.sleep(0.5)  # let each worker's Redis subscriber settle

    to_first, to_second = make_event(A), make_event(A)
    assert first.post(to_first).status_code == 201
    assert second.post(to_second).status_code == 201

    for opened in (on_first, on_second):
        received = [e.json()["id"] for e in opened.collect("notification", 2)]
        assert received == [to_first["id"], to_second["id"]]
        assert opened.quiet("notification", 0.5) == []


def test_a_redis_restart_loses_nothing_and_listeners_reconnect_by_themselves(workers, redis_server):
    first, second = workers
    streams = [stream(first, A, B), stream(second, A, B)]
    before = make_event(A)
    first.post(before)
    for opened in streams:
        assert opened.next_of("notification").json()["id"] == before["id"]

    redis_server.stop()
    # Ingest goes on while Redis is down: stored, 201, delivered once Redis is back.
    during = [make_event(A), make_event(B), make_event(A)]
    assert first.post(during[0]).status_code == 201
    assert second.post(during[1:]).status_code == 201
    time.sleep(1)
    redis_server.start()

    for opened in streams:
        received = [e.json()["id"] for e in opened.collect("notification", 3, timeout=20)]
        assert sorted(received) == sorted(e["id"] for e in during)

    # The listeners are live again: a new event arrives without any reconnect.
    after = make_event(B)
    second.post(after)
    for opened in streams:
        assert opened.next_of("notification", timeout=10).json()["id"] == after["id"]
        assert opened.quiet("notification", 0.5) == []


def test_concurrent_posters_on_postgres_get_contiguous_logs_and_one_fault_per_key(workers):
    first, second = workers
    watchers = [stream(first, A, B), stream(second, A, B)]
    posters, per_poster = 16, 20
    barrier = threading.Barrier(posters)

    def poster(number):
        worker = workers[number % 2]
        statuses = []
        headers = {"Authorization": f"Bearer {worker.ingest_key}"}
        with httpx.Client(timeout=60, headers=headers) as client:
            barrier.wait()
            for i in range(per_poster):
                event = make_event((A, B)[(number + i) % 2], id=f"pg-{number}-{i}")
                statuses.append(client.post(f"{worker.url}/api/event", json=event).status_code)
        return statuses

    with ThreadPoolExecutor(posters) as pool:
        statuses = [s for result in pool.map(poster, range(posters)) for s in result]
    assert statuses.count(201) == posters * per_poster

    # Every event fires its station's one fault key: its notification and a raise (raises
    # stored in one transaction are one frame), by two processes racing on the same
    # stations and the same faults.
    total = posters * per_poster
    for opened in watchers:
        delivered = opened.collect_log_until(every_event_counted(total), timeout=60)
        for seqs in positions_per_station(delivered).values():
            assert seqs == list(range(1, len(seqs) + 1))
        notifications = [e.json() for e in delivered if e.event == "notification"]
        assert len({data["id"] for data in notifications}) == total
        faults = [e.json() for e in delivered if e.event == "fault"]
        fault_ids = {(data["stationId"], data["id"]) for data in faults}
        assert sorted(station for station, _ in fault_ids) == sorted([A, B])
        last = {data["stationId"]: data["occurrences"] for data in faults}
        assert sum(last.values()) == total  # one open fault per station, every event on it
        assert opened.quiet("notification", 0.5) == []


def test_database_connections_stay_within_the_pool_whatever_the_streams(
    tmp_path, pg_database, redis_server
):
    database = pg_database
    name = database.name
    env = {"REDIS_URL": redis_server.url, "DB_POOL_MAX": "4", "CGM_SSE_DB_THREADS": "4"}
    worker = DaphneServer(tmp_path, env=env, database=database).start()
    try:

        async def scenario():
            opened = []
            for n in range(250):
                reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
                writer.write(
                    f"GET /api/sse/stations/ST{n % 12 + 1:03d}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {worker.subscribe_key}\r\n\r\n".encode()
                )
                opened.append((reader, writer))
            for reader, _ in opened:
                buffer = b""
                while b"stream-open" not in buffer:
                    buffer += await asyncio.wait_for(reader.read(4096), 20)
            connections = pg_connections(name)
            threads = worker.threads()
            for _, writer in opened:
                writer.close()
            return connections, threads

        connections, threads = asyncio.run(scenario())
        print(f"250 streams on PostgreSQL: {connections} DB connections, {threads} threads")
        assert connections <= 4
        assert threads <= 15
    finally:
        worker.stop()


def test_run_multi_serves_several_workers_on_one_socket(tmp_path, pg_database, redis_server):
    database = pg_database
    launcher, port, banner, pids = start_run_multi(database.url, {"REDIS_URL": redis_server.url})
    try:
        assert "2 Daphne workers" in banner
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {database.subscribe_key}"}

        streams = [SSEStream(f"{url}/api/sse/stations/{A}/", headers=headers) for _ in range(12)]
        for opened in streams:
            opened.next_of("stream-open")
        # The kernel spread the connections over both workers.
        holders = {pid for pid in pids if _established_connections(pid) > 0}
        assert holders == set(pids), holders

        event = make_event(A)
        posted = httpx.post(
            f"{url}/api/event",
            json=event,
            headers={"Authorization": f"Bearer {database.ingest_key}"},
        )
        assert posted.status_code == 201
        for opened in streams:
            assert opened.next_of("notification").json()["id"] == event["id"]
    finally:
        launcher.terminate()
        launcher.wait(20)


def _established_connections(pid: int) -> int:
    """Sockets the process holds (minus the shared listener): a rough count is enough."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count - 1
