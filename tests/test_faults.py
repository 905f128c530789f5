"""The fault suite: real server processes under load, one fault each, nothing lost.

Every scenario runs the same load (tests/faults_support.py, `run_load`): 100
subscribers over 10 stations, each resuming from its last cursor (`Last-Event-ID`)
whenever its stream ends, breaks or is answered 503; posters at 50 events/s for 15 s,
each post repeated with the same id until it is answered 201/200. A fault is injected
5 s in. Then, whatever the fault:

- every subscriber ends with exactly the ids accepted (201/200) for its station:
  0 lost, 0 duplicated;
- every refusal was a documented 503 with `Retry-After` (posts and stream opens), and
  no other 5xx was answered or logged;
- afterwards the server is healthy: a fresh stream opens (200) and a fresh post is
  answered 201, each within 2 s, and the post reaches the stream.

Each scenario prints one summary line (run with -s).
"""

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import statistics
import time
from collections import Counter

import pytest

from tests.faults_support import (
    STATIONS,
    Load,
    MultiWorkers,
    PrivatePostgres,
    StalledReader,
    health_problems,
    logged_5xx,
    open_streams,
    oversize_upload,
    rss_kb,
    run_load,
    served_connections,
)
from tests.server import DaphneServer, PreparedDatabase, prepare_database
from tests.services import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    RedisServer,
)

pytestmark = pytest.mark.e2e


# --- services --------------------------------------------------------------------------


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


def start_all(servers):
    """Start several servers at once (each takes seconds to import Django)."""
    with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
        return list(pool.map(lambda server: server.start(), servers))


def report(name: str, outcome, problems: list[str]) -> None:
    print(f"\n[fault suite] {outcome.summary(name)}")
    for problem in problems:
        print(f"[fault suite]   PROBLEM: {problem}")


def log_problems(name: str, log: str) -> list[str]:
    errors = logged_5xx(log)
    return [f"{name} logged 5xx answers: {dict(errors)}"] if errors else []


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"


def p50(latencies: list[float]) -> float:
    return statistics.median(latencies) if latencies else float("nan")


def latency_problems(run, before: tuple[float, float], during: tuple[float, float]) -> list:
    """The normal subscribers' p50 while the fault is on, against the first seconds of
    the run: generous (a shared 2-core machine), but a stall of the loop shows."""
    early, late = p50(run.latencies_between(*before)), p50(run.latencies_between(*during))
    allowed = max(3 * early, early + 0.25)
    print(
        f"[fault suite]   p50 latency: {early * 1000:.1f} ms in {before} s, "
        f"{late * 1000:.1f} ms in {during} s (allowed {allowed * 1000:.0f} ms)"
    )
    if not late <= allowed:
        return [f"p50 latency {late * 1000:.1f} ms during the fault, {early * 1000:.1f} ms before"]
    return []


# --- 1. kill -9 of a worker --------------------------------------------------------------


def test_a_worker_killed_with_sigkill_under_load_is_restarted_and_its_subscribers_resume_losing_and_repeating_nothing(  # noqa: E501
    tmp_path, pg_database, redis_server
):
    multi = MultiWorkers(
        tmp_path, pg_database, {"REDIS_URL": redis_server.url, "DB_POOL_MAX": "6"}, workers=2
    ).start()
    seen = {}
    try:
        load = Load([multi.port], [multi.port], multi.ingest_key, multi.subscribe_key)

        async def kill_a_worker(run):
            pids = multi.worker_pids()
            seen["held"] = {pid: served_connections(pid, multi.port) for pid in pids}
            victim = max(pids, key=lambda pid: seen["held"][pid])
            seen["victim"] = victim
            listening = multi.listening()
            os.kill(victim, signal.SIGKILL)
            run.mark("killed")
            await asyncio.to_thread(multi.wait_listening, listening + 1, 40)
            run.mark("replacement listening")

        outcome = asyncio.run(run_load(load, kill_a_worker))
        problems = outcome.problems()

        # Subscribers were on both workers when one was killed.
        if len(seen["held"]) != 2 or min(seen["held"].values()) < 10:
            problems.append(f"subscribers per worker before the kill: {seen['held']}")
        workers = multi.worker_pids()
        if len(workers) != 2 or seen["victim"] in workers:
            problems.append(f"workers after the kill: {workers} (killed {seen['victim']})")
        if f"worker {seen['victim']} exited (-9); restarting" not in multi.log():
            problems.append("run_multi did not report restarting the killed worker")
        for _ in range(2):
            problems += health_problems(multi.url, multi.url, multi.ingest_key, multi.subscribe_key)
        # Healthy means both workers, the new one too, open fresh streams at once.
        socks, opening = open_streams(multi.port, multi.subscribe_key, 16)
        problems += opening
        holding = {pid: served_connections(pid, multi.port) for pid in workers}
        for sock in socks:
            sock.close()
        if not all(holding.values()):
            problems.append(f"fresh streams per worker: {holding}")
        problems += log_problems("run_multi", multi.log())
        report("kill -9 of a worker (run_multi, 2 workers, PostgreSQL + Redis)", outcome, problems)
        print(f"[fault suite]   streams per worker before the kill: {seen['held']}")
        assert not problems, "\n".join(problems)
    finally:
        multi.stop()


# --- 2. Redis restart ----------------------------------------------------------------------


def test_a_redis_restart_under_load_with_two_workers_loses_and_repeats_nothing(
    tmp_path, pg_database, redis_server
):
    env = {"REDIS_URL": redis_server.url, "DB_POOL_MAX": "6"}
    workers = [DaphneServer(tmp_path, env=env, database=pg_database) for _ in range(2)]
    try:
        start_all(workers)
        ports = [worker.port for worker in workers]
        load = Load(ports, ports, workers[0].ingest_key, workers[0].subscribe_key)

        async def restart_redis(run):
            await asyncio.to_thread(redis_server.stop)
            run.mark("redis stopped")
            await asyncio.sleep(3)
            await asyncio.to_thread(redis_server.start)
            run.mark("redis started")

        outcome = asyncio.run(run_load(load, restart_redis))
        problems = outcome.problems()
        slowest = max(outcome.run.stats.latencies, default=0)
        print(f"[fault suite]   slowest delivery (posted on one, read on both): {slowest:.2f} s")
        for worker in workers:
            if "Redis subscriber lost its connection" not in worker.log():
                problems.append(f"worker :{worker.port} never noticed Redis going away")
        for stream_on, post_to in ((0, 1), (1, 0)):
            problems += health_problems(
                workers[stream_on].url,
                workers[post_to].url,
                workers[0].ingest_key,
                workers[0].subscribe_key,
            )
        for worker in workers:
            if worker.process.poll() is not None:
                problems.append(f"worker on :{worker.port} exited ({worker.process.returncode})")
            problems += log_problems(f"worker :{worker.port}", worker.log())
        report("Redis restart (2 workers, PostgreSQL + Redis)", outcome, problems)
        assert not problems, "\n".join(problems)
    finally:
        for worker in workers:
            worker.stop()


# --- 3. PostgreSQL stopped and started ------------------------------------------------------


def _shared_postgres_answers() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def test_postgresql_stopped_and_started_under_load_refuses_with_503_and_retry_after_and_loses_nothing(  # noqa: E501
    tmp_path, request
):
    # A private cluster: the machine's PostgreSQL serves the other tests.
    cluster = PrivatePostgres().init()
    server = None
    try:
        cluster.start()
        if _shared_postgres_answers():
            # The migrated template, copied over (much faster than migrating again).
            template, prepared = request.getfixturevalue("pg_template")
            cluster.copy_database(PG_HOST, PG_PORT, PG_USER, template, "cgm")
            database = PreparedDatabase(
                cluster.url("cgm"), prepared.ingest_key, prepared.subscribe_key
            )
        else:
            created = cluster.psql("postgres", "-c", "CREATE DATABASE cgm")
            assert created.returncode == 0, created.stderr
            database = prepare_database(cluster.url("cgm"))
        server = DaphneServer(tmp_path, database=database).start()
        load = Load([server.port], [server.port], server.ingest_key, server.subscribe_key)

        down = {}
        reopened = []

        async def outage(run):
            await asyncio.to_thread(cluster.stop, "fast")
            run.mark("postgres stopped")
            down["from"] = time.monotonic()
            await asyncio.sleep(1)
            # Dashboards reloading while the database is down.
            reopened.extend(run.subscribers[::10])
            for sub in reopened:
                sub.blip(0.1)
            run.mark(f"{len(reopened)} clients reopen")
            await asyncio.sleep(4)
            down["to"] = time.monotonic()
            await asyncio.to_thread(cluster.start)
            down["back"] = time.monotonic()  # it answers again (pg_ctl waited for that)
            run.mark("postgres started")

        outcome = asyncio.run(run_load(load, outage))
        problems = outcome.problems()
        during = [
            (answered - sent, status, answered - down["back"])
            for sent, answered, status in outcome.ledger.attempts
            if down["from"] <= sent < down["to"]
        ]
        statuses = Counter(status for _, status, _ in during)
        slowest = max((took for took, status, _ in during if status == 503), default=0)
        # A post stored after waiting for a connection (at most DB_POOL_TIMEOUT, 2 s)
        # could not be answered before the database was back: timed from then.
        slowest_stored = max((late for _, status, late in during if status != 503), default=0)
        print(
            f"[fault suite]   posts sent while PostgreSQL was down: {dict(statuses)}, "
            f"slowest 503 {slowest:.2f} s after the post, slowest stored "
            f"{slowest_stored:.2f} s after the database was back"
        )
        # Answered promptly either way: 503 (retry), or stored once the database came back.
        if (
            not during
            or 503 not in statuses
            or set(statuses) - {503, 200, 201}
            or slowest > 3
            or slowest_stored > 3
        ):
            problems.append(
                f"posts sent while PostgreSQL was down: {dict(statuses)} (not 503 or stored, "
                f"at once), slowest 503 {slowest:.2f} s, slowest stored {slowest_stored:.2f} s "
                f"after the database was back"
            )
        opens = [
            (answered - began, status, answered < down["to"])
            for sub in reopened
            for began, answered, status in sub.history
            if down["from"] <= began < down["to"]
        ]
        open_statuses = Counter(status for _, status, _ in opens)
        slowest_open = max((took for took, _, _ in opens), default=0)
        print(
            f"[fault suite]   stream opens while PostgreSQL was down: {dict(open_statuses)}, "
            f"slowest answer {slowest_open:.2f} s"
        )
        # Answered while it was down: 503. An open still waiting for a connection (at
        # most DB_POOL_TIMEOUT, 2 s) when the database came back may be served, as a
        # post may be stored; timing alone decides which, so both are right then.
        answered_down = {status for _, status, before_restart in opens if before_restart}
        answered_after = {status for _, status, before_restart in opens if not before_restart}
        if not opens or answered_down - {503} or answered_after - {503, 200} or slowest_open > 3:
            problems.append(
                f"stream opens while PostgreSQL was down: {dict(open_statuses)} (not all 503 "
                f"at once), slowest answer {slowest_open:.2f} s"
            )
        ends = sum(sub.ends for sub in outcome.subscribers)
        if server.process.poll() is not None:
            problems.append(f"server exited ({server.process.returncode})")
        problems += health_problems(server.url, server.url, server.ingest_key, server.subscribe_key)
        problems += log_problems("server", server.log())
        report("PostgreSQL stopped 5 s and started (1 worker)", outcome, problems)
        print(
            f"[fault suite]   streams that ended and resumed: {ends} "
            f"({len(reopened)} dropped by their clients during the outage)"
        )
        assert not problems, "\n".join(problems)
    finally:
        if server is not None:
            server.stop()
        cluster.destroy()


# --- 4. an exception injected in a stream ----------------------------------------------------

# The resuming clients' first replay page is read in their opens (a fault there refuses
# the open); a running stream's later catch-ups are tested in test_stream_failures.py.
FAILPOINTS = {"stream.live": 300, "stream.first_page": 5, "stream.encode": 700}


def test_exceptions_injected_in_streams_end_only_those_streams_which_resume_losing_and_repeating_nothing(  # noqa: E501
    tmp_path,
):
    failpoints = ",".join(f"{stage}={count}" for stage, count in FAILPOINTS.items())
    server = DaphneServer(tmp_path, env={"CGM_FAILPOINTS": failpoints}).start()
    try:
        load = Load([server.port], [server.port], server.ingest_key, server.subscribe_key)
        blipped = 20

        async def clients_come_back_from_behind(run):
            # The live and encode faults fire within the first seconds of the load. A
            # catch-up read needs a client behind the log: 20 of them drop for a second
            # (their own network) and resume from their cursor.
            for sub in run.subscribers[:: len(run.subscribers) // blipped]:
                sub.blip(1.0)
            run.mark(f"{blipped} clients dropped for 1 s")

        outcome = asyncio.run(run_load(load, clients_come_back_from_behind))
        problems = outcome.problems()
        log = server.log()
        for stage in FAILPOINTS:
            logged = log.count(f"InjectedFaultError: failpoint {stage}")
            if logged != 1:
                problems.append(f"failpoint {stage} logged {logged} times, not once")
        ended_by_server = sum(sub.ends for sub in outcome.subscribers) - blipped
        # The first-page fault refuses an open (503 + Retry-After) instead of ending a
        # stream. Either way the client comes back.
        refused_opens = outcome.open_statuses()[503]
        if ended_by_server + refused_opens < len(FAILPOINTS):
            problems.append(
                f"only {ended_by_server} streams ended and {refused_opens} opens refused"
                " by the injected faults"
            )
        if server.process.poll() is not None:
            problems.append(f"server exited ({server.process.returncode})")
        problems += health_problems(server.url, server.url, server.ingest_key, server.subscribe_key)
        problems += log_problems("server", log)
        report(f"exceptions injected ({failpoints})", outcome, problems)
        print(
            f"[fault suite]   streams ended by the server and resumed: {ended_by_server}, "
            f"opens refused and retried: {refused_opens}"
        )
        assert not problems, "\n".join(problems)
    finally:
        server.stop()


# --- 5. a slow consumer -------------------------------------------------------------------------


def test_a_slow_consumer_is_disconnected_without_costing_the_others_events_or_latency_or_the_server_memory(  # noqa: E501
    tmp_path,
):
    backlog = 262144
    server = DaphneServer(tmp_path, env={"CGM_SSE_MAX_BACKLOG_BYTES": str(backlog)}).start()
    stalled: list[StalledReader] = []
    rss: list[int] = []
    try:
        # Events of ~2 KB: a stalled all-station stream falls 100 KB/s behind.
        load = Load(
            [server.port],
            [server.port],
            server.ingest_key,
            server.subscribe_key,
            message="a slow consumer must not slow the others down. " * 40,
        )
        every_station = "&".join(f"station={code}" for code in STATIONS)
        from_the_start = ",".join(f"{code}:0" for code in STATIONS)

        async def readers_stop_reading(run):
            # Two open live, two resume from the start of the log (a burst of catch-up).
            for n in range(4):
                stalled.append(
                    StalledReader(
                        server.port,
                        f"/api/sse/?{every_station}",
                        server.subscribe_key,
                        cursor=from_the_start if n % 2 else None,
                    )
                )
            run.mark("4 readers stalled")
            deadline = asyncio.get_running_loop().time() + 9
            while not all(reader.dropped_by_server() for reader in stalled):
                if asyncio.get_running_loop().time() > deadline:
                    return
                await asyncio.sleep(0.25)
            run.mark("stalled readers dropped")

        async def sample_rss(run):
            while True:
                rss.append(rss_kb(server.pid))
                await asyncio.sleep(0.5)

        outcome = asyncio.run(run_load(load, readers_stop_reading, monitor=sample_rss))
        problems = outcome.problems()
        still = {r.client_port: r.queued() for r in stalled if not r.dropped_by_server()}
        if still:
            problems.append(
                f"stalled readers still connected {load.duration - load.fault_at:.0f} s after "
                f"they stopped reading (client port: bytes the server's kernel still queues "
                f"for it, beyond Twisted's buffer and the backlog): {still}"
            )
        dropped_logged = server.log().count("stopped reading: disconnected")
        if dropped_logged < len(stalled):
            problems.append(f"{dropped_logged} slow-client disconnections logged, not 4")
        resumed = sum(sub.attempts - 1 for sub in outcome.subscribers)
        if resumed:
            problems.append(f"normal subscribers had to reconnect {resumed} times")
        problems += latency_problems(
            outcome.run, (0.5, load.fault_at), (load.fault_at, load.duration)
        )
        growth = max(rss) - rss[0]
        print(f"[fault suite]   server RSS {rss[0] // 1024} MB at start, +{growth // 1024} MB peak")
        if growth > 64 * 1024:
            problems.append(f"server RSS grew {growth // 1024} MB with 4 stalled readers")
        problems += health_problems(server.url, server.url, server.ingest_key, server.subscribe_key)
        problems += log_problems("server", server.log())
        report(f"slow consumers (4 stalled, backlog {backlog} B)", outcome, problems)
        assert not problems, "\n".join(problems)
    finally:
        for reader in stalled:
            reader.close()
        server.stop()


# --- 6. an oversize unauthenticated upload ---------------------------------------------------


def test_oversize_unauthenticated_uploads_under_load_get_401_json_at_once_and_are_closed_while_the_load_goes_on(  # noqa: E501
    tmp_path,
):
    server = DaphneServer(tmp_path).start()
    results = []
    try:
        load = Load([server.port], [server.port], server.ingest_key, server.subscribe_key)

        async def oversize_uploads(run):
            kinds = (False, False, False, True)  # three of 2 GB declared, one chunked
            results.extend(
                await asyncio.gather(
                    *(asyncio.to_thread(oversize_upload, server.port, chunked) for chunked in kinds)
                )
            )
            run.mark("uploads closed")

        outcome = asyncio.run(run_load(load, oversize_uploads))
        problems = outcome.problems()
        for result in results:
            described = (
                f"{result.kind}: {result.status} after {seconds(result.answered_in)}, closed "
                f"after {seconds(result.closed_in)}, {result.sent_bytes // 1024} KB sent"
                + (f", {result.error}" if result.error else "")
            )
            print(f"[fault suite]   upload {described}")
            if result.status != 401:
                problems.append(f"upload {described}: not 401")
                continue
            if not result.headers.get("content-type", "").startswith("application/json"):
                problems.append(f"upload {described}: {result.headers.get('content-type')}")
            try:
                error = json.loads(result.body).get("error")
            except ValueError:
                error = None
            if error != "unauthenticated":
                problems.append(f"upload {described}: body {result.body[:200]!r}")
            if result.answered_in is None or result.answered_in > 2:
                problems.append(f"upload {described}: not answered at once")
            if result.closed_in is None or result.closed_in > result.answered_in + 3:
                problems.append(f"upload {described}: not closed after the answer")
        problems += latency_problems(
            outcome.run, (0.5, load.fault_at), (load.fault_at, load.fault_at + 5)
        )
        problems += health_problems(server.url, server.url, server.ingest_key, server.subscribe_key)
        problems += log_problems("server", server.log())
        report("oversize unauthenticated uploads (3 x 2 GB declared, 1 chunked)", outcome, problems)
        assert not problems, "\n".join(problems)
    finally:
        server.stop()
