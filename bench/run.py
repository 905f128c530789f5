"""The project's benchmark: real servers, real streams, one result line per scenario.

    .venv/bin/python bench/run.py                      # every scenario at the issue's sizes
    .venv/bin/python bench/run.py embedded --subscribers 200 --duration 10   # a quick one

Scenarios:
  embedded   SQLite, one Daphne; subscribers, then events at a fixed rate
  multi      PostgreSQL + Redis, 2 Daphne workers on one socket (scripts/run_multi.py),
             then a reconnect storm of every subscriber with Last-Event-ID
  pushpin    PostgreSQL, Pushpin in front of 2 Daphne workers, then a reconnect storm
  ingest     PostgreSQL + 2 workers, no subscribers: 16 posters flat out, single and
             batches of 100
  idle       idle streams only: server memory per stream
  opens      the multi size's stream opens alone: N fresh opens, then events posted,
             then the same N again resuming from their cursors (a storm's replay);
             opens/s and CPU per open (not part of the default run)
  calibrate  the yardstick: a no-op ASGI app (bench/noop_app.py) under the same two
             Daphne workers and 16 posters as `ingest`, and a pure-Python loop; what
             any Daphne app can reach on this machine (not part of the default run)

`--serve ingest` holds the ingest scenario's servers up for bench/compare.py, which
compares two checkouts' ingest in one run.

Load generator and servers share the machine (2 cores here): figures are for that.
"""

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import (  # noqa: E402
    Stats,
    Subscriber,
    close_all,
    open_all,
    post_at_rate,
    post_flat_out,
    reconnect_storm,
)
from tests.server import DaphneServer, free_port, prepare_database  # noqa: E402
from tests.services import (  # noqa: E402
    PushpinServer,
    RedisServer,
    create_pg_database,
    descendant_pids,
    drop_pg_database,
    pg_connections,
    pg_url,
)

QUIET = ("-v", "0")  # no access log line per request
SERVER_ENV = {"CGM_INGEST_RATE": "1000000/s", "LOG_LEVEL": "WARNING"}


def proc_status(pid: int) -> tuple[int, int]:
    """(RSS KiB, threads) of a process and its children, from /proc."""
    rss = threads = 0
    for p in [pid, *descendant_pids(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads += int(line.split()[1])
        except FileNotFoundError:
            pass
    return rss, threads


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU so far of one process and of its children that have exited
    and been reaped, from /proc (0 if it is gone). With the reaped children, a tree
    whose processes exit and start again (Pushpin under its launcher) is measured
    whole, not less than it was at the start."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(n) for n in fields[11:15]) / TICK


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU so far of some processes and all their children."""
    return sum(cpu_seconds(p) for pid in pids for p in [pid, *descendant_pids(pid)])


class CpuMeter:
    """Where the machine's CPU went during a run: the Django processes, the proxy in
    front of them (Pushpin's runner and its condure, proxy, handler and zurl), PostgreSQL,
    this load generator, and the whole machine (/proc/stat). Noisy machines move
    throughput from run to run; CPU per event moves far less, so it says where an
    event's cost is, and whether a run is bound by the cores."""

    def __init__(self, django_pids: list[int], proxy_pids: list[int] | None = None):
        self.django_pids = django_pids
        self.proxy_pids = proxy_pids or []
        self.start = self._sample()

    def _sample(self) -> dict:
        postgres = {pid: cpu_seconds(pid) for pid in postgres_pids()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / TICK  # minus idle and iowait
        return {
            "django": tree_cpu_seconds(self.django_pids),
            "proxy": tree_cpu_seconds(self.proxy_pids),
            "postgres": postgres,
            "loadgen": usage.ru_utime + usage.ru_stime,
            "machine": busy,
            "time": time.monotonic(),
        }

    def spent(self) -> dict[str, float]:
        """CPU seconds spent since the meter started, by whom; `time` is the wall time."""
        end, start = self._sample(), self.start
        postgres = sum(
            cpu - start["postgres"].get(pid, 0.0) for pid, cpu in end["postgres"].items()
        )
        return {
            "django": end["django"] - start["django"],
            **({"pushpin": end["proxy"] - start["proxy"]} if self.proxy_pids else {}),
            "postgres": postgres,
            "loadgen": end["loadgen"] - start["loadgen"],
            "machine": end["machine"] - start["machine"],
            "time": end["time"] - start["time"],
        }

    def report(self, events: int, unit: str = "event") -> str:
        """CPU per `unit` (an event posted, a stream opened) since the meter started."""
        return cpu_line(self.spent(), events, unit)


def cpu_line(spent: dict[str, float], events: int, unit: str = "event") -> str:
    """`cpu/event django=...us ... (machine busy X of N cores)` from CpuMeter.spent()."""
    per_event = " ".join(
        f"{k}={v / max(1, events) * 1e6:.0f}us" for k, v in spent.items() if k != "time"
    )
    cores = spent["machine"] / spent["time"]
    return f"cpu/{unit} {per_event} (machine busy {cores:.2f} of {os.cpu_count()} cores)"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f}ms"


class Stack:
    """The servers of one scenario: where clients connect, which pids to measure."""

    client_port: int
    ingest_port: int
    django_pids: list[int]
    proxy_pids: list[int]
    ingest_key: str
    subscribe_key: str
    db_name: str | None = None
    db_file: Path | None = None

    def stop(self):
        raise NotImplementedError

    def incidents(self) -> str:
        """What went wrong in the servers themselves during the run (empty if nothing)."""
        return ""

    def db_connections(self) -> str:
        if self.db_name:
            return str(pg_connections(self.db_name))
        count = 0
        for pid in self.django_pids:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) == str(self.db_file):
                        count += 1
                except OSError:
                    pass
        return f"{count} (sqlite handles)"


class EmbeddedStack(Stack):
    def __init__(self, workdir: Path, stations: int):
        self.server = DaphneServer(workdir, stations=stations, env=SERVER_ENV, daphne_args=QUIET)
        self.server.start()
        self.client_port = self.ingest_port = self.server.port
        self.django_pids = [self.server.pid]
        self.proxy_pids = []
        self.ingest_key, self.subscribe_key = self.server.ingest_key, self.server.subscribe_key
        self.db_file = workdir / "db.sqlite3"

    def stop(self):
        self.server.stop()


class MultiStack(Stack):
    """PostgreSQL + Redis + scripts/run_multi.py (workers sharing one socket)."""

    def __init__(
        self, workdir: Path, stations: int, workers: int = 2, port: int = 0, env: dict | None = None
    ):
        self.db_name = create_pg_database()
        self.database = prepare_database(pg_url(self.db_name), stations=stations)
        self.redis = RedisServer().start()
        self.ingest_key = self.database.ingest_key
        self.subscribe_key = self.database.subscribe_key
        self.env = {
            **os.environ,
            **SERVER_ENV,
            "DJANGO_SETTINGS_MODULE": "cgm.settings",
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis.url,
            "DEBUG": "0",
            "SECRET_KEY": "bench-secret",
            "ALLOWED_HOSTS": "127.0.0.1",
            "CGM_ALLOW_PLAIN_HTTP": "1",
            **(env or {}),
        }
        self.proxy_pids = []
        self.port = port or free_port()
        self.launcher = subprocess.Popen(
            [
                sys.executable,
                "scripts/run_multi.py",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--",
                *QUIET,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        banner = self.launcher.stdout.readline()
        self.django_pids = [int(p) for p in banner.split("(pids ")[1].rstrip(")\n").split()]
        self.client_port = self.ingest_port = self.port
        wait_for_port(self.port)

    def stop(self):
        self.launcher.terminate()
        self.launcher.wait(30)
        self.redis.stop()
        drop_pg_database(self.db_name)


class NoopStack(Stack):
    """bench/noop_app.py under two Daphne workers on one port, as MultiStack serves the
    project (each worker its own SO_REUSEPORT socket), with no database at all."""

    def __init__(self, workdir: Path, stations: int, workers: int = 2):
        sys.path.insert(0, str(ROOT / "scripts"))
        from run_multi import listening_socket

        self.port = free_port()
        self.listeners = [listening_socket("127.0.0.1", self.port) for _ in range(workers)]
        daphne = Path(sys.executable).parent / "daphne"
        self.workers = [
            subprocess.Popen(
                [str(daphne), "--fd", str(s.fileno()), *QUIET, "bench.noop_app:application"],
                cwd=ROOT,
                pass_fds=[s.fileno()],
            )
            for s in self.listeners
        ]
        self.client_port = self.ingest_port = self.port
        self.django_pids = [w.pid for w in self.workers]
        self.proxy_pids = []
        self.ingest_key = self.subscribe_key = "none"
        wait_for_port(self.port)
        time.sleep(1)  # both workers up, not just the first

    def stop(self):
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            worker.wait(10)
        for listener in self.listeners:
            listener.close()

    def db_connections(self) -> str:
        return "0 (no database)"


class PushpinStack(MultiStack):
    """PostgreSQL, Pushpin holding the streams, in front of the multi size's Daphne
    workers on one port. Not one origin per worker: Pushpin sends every request to its
    first origin and tries the next only when that one fails (proxysession.cpp), so
    with two origins the second worker sat idle. The workers also publish to Redis
    (run_multi.py requires it), as a deployment of this shape does."""

    def __init__(self, workdir: Path, stations: int):
        port = free_port()
        self.pushpin = PushpinServer(workdir, origins=[port])
        super().__init__(workdir, stations, port=port, env={"GRIP_URL": self.pushpin.grip_url})
        try:
            self.pushpin.start(probe_headers={"Authorization": f"Bearer {self.subscribe_key}"})
        except BaseException:
            super().stop()  # the workers, Redis and the database, not left running
            raise
        self.client_port = self.pushpin.port
        self.proxy_pids = [self.pushpin.process.pid]

    def incidents(self) -> str:
        """Pushpin's exits during the run: its launcher starts it again (as
        pushpin.service does) and the streams resume, so a run can lose nothing and
        still have had one; the line says so, with the first panic, if any."""
        log = self.pushpin.log().splitlines()
        exits = [line for line in log if "run_pushpin: pushpin exited unexpectedly" in line]
        if not exits:
            return ""
        why = next((line.strip() for line in log if "panicked at" in line), "no panic logged")
        if any("not starting it again" in line for line in log):
            return f" | pushpin exited {len(exits)} times and its launcher gave up (first: {why})"
        return f" | pushpin exited and was started again {len(exits)} times (first: {why})"

    def stop(self):
        self.pushpin.stop()
        super().stop()


def wait_for_port(port: int, timeout: float = 30):
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answers on {port}")


def measure(stack: Stack) -> tuple[int, int]:
    rss = threads = 0
    for pid in stack.django_pids + stack.proxy_pids:
        r, t = proc_status(pid)
        rss += r
        threads += t
    return rss, threads


def django_threads(stack: Stack) -> int:
    return sum(proc_status(pid)[1] for pid in stack.django_pids)


def station_codes(args) -> list[str]:
    return [f"ST{n:03d}" for n in range(1, args.stations + 1)]


def subscribers(stack: Stack, args) -> list[Subscriber]:
    """args.subscribers one-station streams, spread evenly over the stations."""
    codes = station_codes(args)
    auth = {"Authorization": f"Bearer {stack.subscribe_key}"}
    return [
        Subscriber(f"/api/sse/stations/{codes[n % len(codes)]}/", codes[n % len(codes)], auth)
        for n in range(args.subscribers)
    ]


async def streaming_scenario(name: str, stack: Stack, args) -> str:
    codes = station_codes(args)
    subs = subscribers(stack, args)
    stats = Stats()
    await asyncio.sleep(1)
    rss_before, _ = measure(stack)
    started = time.monotonic()
    failed_open = await open_all(stack.client_port, subs, stats)
    open_seconds = time.monotonic() - started
    await asyncio.sleep(2)
    rss_open, threads_open = measure(stack)
    per_stream = (rss_open - rss_before) / max(1, args.subscribers - failed_open)
    db_conns = stack.db_connections()
    threads_django = django_threads(stack)

    sent: dict[str, list[str]] = {}
    post = post_at_rate(
        stack.ingest_port,
        {"Authorization": f"Bearer {stack.ingest_key}"},
        stats,
        rate=args.rate,
        duration=args.duration,
        stations=codes,
        batch=args.batch,
        prefix=f"{name}-{int(time.time())}",
        sent_per_station=sent,
    )
    storm_failed = None
    steady = stats.latencies
    # Where the CPU went while streaming steadily (until the storm, if any): whether
    # the steady latency is bound by this machine's cores, and whose.
    steady_cpu = CpuMeter(stack.django_pids, stack.proxy_pids)
    if args.storm:
        # Stream steadily for the first part, then drop and reconnect everyone while
        # events keep coming. Latency is reported for the steady part: during the storm
        # an event waits for its subscriber to come back, by design.
        poster = asyncio.ensure_future(post)
        await asyncio.sleep(args.duration * 0.5)
        steady = list(stats.latencies)
        steady_cpu = steady_cpu.report(stats.accepted)
        # Where the CPU went until all were back (the posts go on meanwhile): whether
        # the storm is bound by this machine's cores, and whose.
        storm_cpu = CpuMeter(stack.django_pids, stack.proxy_pids)
        storm_failed, storm_back = await reconnect_storm(stack.client_port, subs, stats, within=10)
        storm_cpu = storm_cpu.report(len(subs), unit="reopen")
        await poster
    else:
        await post
        steady_cpu = steady_cpu.report(stats.accepted)

    expected = sum(len(sent.get(sub.station, [])) for sub in subs if sub.ever_opened)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        delivered = sum(len(sub.received) for sub in subs)
        if delivered >= expected:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(1)
    delivered = sum(len(sub.received) for sub in subs)
    lost = sum(len(set(sent.get(sub.station, [])) - sub.received) for sub in subs)
    duplicated = sum(sub.duplicates for sub in subs)
    close_all(subs, stats)

    first, later = start_and_after(stats, len(steady))
    line = (
        f"{name}: subscribers={args.subscribers} stations={args.stations} "
        f"failed_opens={failed_open} (opened in {open_seconds:.1f}s, "
        f"{stats.open_retries} retried as the console does) "
        f"rate={args.rate}/s batch={args.batch} duration={args.duration}s | "
        f"offered={stats.offered} accepted={stats.accepted} statuses={stats.statuses} | "
        f"delivered={delivered}/{expected} lost={lost} duplicated={duplicated} | "
        f"ingest p50={ms(pct(stats.ingest, 0.5))} p99={ms(pct(stats.ingest, 0.99))} | "
        f"latency{' (steady part)' if args.storm else ''} p50={ms(pct(steady, 0.5))} "
        f"p99={ms(pct(steady, 0.99))} max={ms(max(steady, default=float('nan')))} "
        f"(p99 of events posted in the first {START_SECONDS:.0f}s={ms(pct(first, 0.99))}, "
        f"after={ms(pct(later, 0.99))}); meanwhile {steady_cpu} | "
        f"rss/stream={per_stream:.1f}KiB (all server processes) "
        f"django_threads={threads_django} all_threads={threads_open} db_connections={db_conns}"
        f" | streams the server ended={stats.server_closes} (reopened as the console does)"
    )
    if storm_failed is not None:
        line += (
            f" | reconnect storm: {len(subs)} within 10s, failed={storm_failed},"
            f" all back in {storm_back:.1f}s; meanwhile, posts included, {storm_cpu}"
        )
    return line + stack.incidents() + failure_reasons(subs, stats) + lost_detail(subs, sent)


def lost_detail(subs: list[Subscriber], sent: dict[str, list[str]]) -> str:
    """When deliveries were lost, which: a station's last events (a stream that had not
    caught up by the end) or a gap before events it did get, and whether the server had
    ended those subscribers' streams. Empty when nothing was lost."""
    losers = []
    for sub in subs:
        order = sent.get(sub.station, [])
        missing = set(order) - sub.received
        if missing:
            places = [index for index, message_id in enumerate(order) if message_id in missing]
            tail_only = places[0] == len(order) - len(missing)
            losers.append((sub, places, len(order), tail_only))
    if not losers:
        return ""
    tails = sum(1 for *_, tail_only in losers if tail_only)
    ended = sum(1 for sub, *_ in losers if sub.server_ended)
    examples = "; ".join(
        f"{sub.station} lost {len(places)} of {total} (events {places[0]}-{places[-1]}),"
        f" last id {sub.last_id}, streams the server ended {sub.server_ended},"
        f" reconnects {sub.reconnects}, open at the end {sub.opened}"
        for sub, places, total, _ in losers[:5]
    )
    return (
        f" | lost detail: {len(losers)} subscribers lost events ({tails} only their"
        f" station's last ones, {len(losers) - tails} with a gap before events they got);"
        f" {ended} of them had a stream the server ended; first ones: {examples}"
    )


START_SECONDS = 2.0


def start_and_after(stats: Stats, count: int) -> tuple[list[float], list[float]]:
    """The first `count` latencies, split by when their event was due to be posted: in
    the first START_SECONDS of the schedule, or after. A start-up cost (caches,
    connections) shows in the first; the rest is the steady state."""
    posted = stats.latency_posted[:count]
    if not posted:
        return [], []
    until = (stats.posting_started or min(posted)) + START_SECONDS
    first = [lat for lat, at in zip(stats.latencies, posted, strict=False) if at < until]
    later = [lat for lat, at in zip(stats.latencies, posted, strict=False) if at >= until]
    return first, later


def failure_reasons(subs, stats) -> str:
    """Why opens and posts failed, most frequent first (empty when nothing failed)."""
    reasons = Counter(sub.failed.split(":")[0][:60] for sub in subs if sub.failed)
    out = ""
    if reasons:
        out += " | open failures: " + ", ".join(f"{r}={n}" for r, n in reasons.most_common(3))
    if stats.retry_reasons:
        out += " | opens retried: " + ", ".join(
            f"{r}={n}" for r, n in stats.retry_reasons.most_common(3)
        )
    if stats.errors:
        out += " | post errors: " + "; ".join(f"{s}: {b[:160]}" for s, b in stats.errors.items())
    return out


async def ingest_scenario(stack: Stack, args) -> list[str]:
    lines = []
    for batch in (1, 100):
        stats = Stats()
        cpu = CpuMeter(stack.django_pids)
        elapsed = await post_ingest(stack.ingest_port, stack.ingest_key, stats, args, batch)
        lines.append(
            f"ingest(batch={batch}): posters=16 duration={elapsed:.1f}s "
            f"accepted={stats.accepted} ({stats.accepted / elapsed:.0f} events/s) "
            f"statuses={stats.statuses} request p50={ms(pct(stats.ingest, 0.5))} "
            f"p99={ms(pct(stats.ingest, 0.99))} db_connections={stack.db_connections()} | "
            f"{cpu.report(stats.accepted)}"
        )
    return lines


async def post_ingest(port: int, key: str, stats: Stats, args, batch: int) -> float:
    """The ingest scenario's load (also bench/compare.py's): 16 posters flat out for
    args.duration seconds, events spread over the stations; returns the seconds taken."""
    return await post_flat_out(
        port,
        {"Authorization": f"Bearer {key}"},
        stats,
        posters=16,
        duration=args.duration,
        stations=station_codes(args),
        batch=batch,
        prefix=f"ingest{batch}-{int(time.time())}",  # (one tree's slices are seconds apart)
    )


def serve_ingest(args) -> None:
    """`--serve ingest`: the ingest scenario's servers, held up for bench/compare.py
    (which posts to them from another process): one JSON line says where they are;
    they stop when standard input closes."""
    stack = MultiStack(Path(tempfile.mkdtemp(prefix="cgm-bench-serve-")), args.stations)
    try:
        where = {"port": stack.ingest_port, "key": stack.ingest_key, "pids": stack.django_pids}
        print(json.dumps(where), flush=True)
        sys.stdin.read()
    finally:
        stack.stop()


async def calibrate_scenario(stack: Stack, args) -> list[str]:
    lines = [line.replace("ingest(", "noop(", 1) for line in await ingest_scenario(stack, args)]
    started = time.process_time()
    total = 0
    for n in range(10_000_000):
        total += n
    lines.append(f"python: 10^7 additions in {time.process_time() - started:.2f}s CPU")
    return lines


async def opens_scenario(stack: Stack, args) -> list[str]:
    """What a stream open costs: `args.subscribers` opens (400 at a time), then a
    second round from the cursors they got after `args.duration` seconds of batches
    flat out, so every open also replays what it missed, as in a reconnect storm."""
    subs = subscribers(stack, args)
    headers = {"Authorization": f"Bearer {stack.ingest_key}"}
    lines = []
    await asyncio.sleep(1)
    for round_name in ("fresh", "resuming"):
        missed = ""
        if round_name == "resuming":
            posted = Stats()
            await post_flat_out(
                stack.ingest_port, headers, posted, posters=4, duration=args.duration,
                stations=station_codes(args), batch=100, prefix=f"opens-{int(time.time())}",
            )  # fmt: skip
            missed = f" after {posted.accepted / args.stations:.0f} events per station"
            for sub in subs:
                sub.opened, sub.failed = False, None
        stats = Stats()
        meter = CpuMeter(stack.django_pids, stack.proxy_pids)
        started = time.monotonic()
        failed = await open_all(stack.client_port, subs, stats)
        elapsed = time.monotonic() - started
        cpu = meter.report(args.subscribers, unit="open")
        lines.append(
            f"opens({round_name}{missed}): {args.subscribers} in {elapsed:.1f}s "
            f"({args.subscribers / elapsed:.0f}/s) failed={failed} "
            f"retried={stats.open_retries} | {cpu}" + failure_reasons(subs, stats)
        )
        close_all(subs, stats)
        await asyncio.sleep(2)  # the closed streams gone from the server
    return lines


async def idle_scenario(stack: Stack, args) -> str:
    subs = subscribers(stack, args)
    stats = Stats()
    await asyncio.sleep(1)
    before, threads_before = measure(stack)
    failed = await open_all(stack.client_port, subs, stats)
    await asyncio.sleep(3)
    after, threads_after = measure(stack)
    close_all(subs, stats)
    return (
        f"idle: streams={args.subscribers} failed_opens={failed} "
        f"server RSS {before / 1024:.1f}->{after / 1024:.1f}MiB "
        f"= {(after - before) / max(1, args.subscribers - failed):.1f}KiB per stream; "
        f"threads {threads_before}->{threads_after}; db_connections={stack.db_connections()}"
    )


DEFAULTS = {
    "embedded": {"subscribers": 2000, "stations": 100, "rate": 200, "duration": 60},
    "multi": {"subscribers": 10000, "stations": 500, "rate": 500, "duration": 60, "storm": True},
    "pushpin": {"subscribers": 10000, "stations": 500, "rate": 500, "duration": 60, "storm": True},
    "ingest": {"stations": 100, "duration": 20},
    "idle": {"subscribers": 2000, "stations": 100},
    "calibrate": {"stations": 100, "duration": 20},
    "opens": {"subscribers": 4000, "stations": 500, "duration": 1},
}
# What `make bench` runs when no scenario is named: the scenarios.
DEFAULT_RUN = ["embedded", "multi", "pushpin", "ingest", "idle"]


def run(name: str, args) -> list[str]:
    workdir = Path(tempfile.mkdtemp(prefix=f"cgm-bench-{name}-"))
    if name in ("embedded", "idle"):
        stack = EmbeddedStack(workdir, args.stations)
    elif name in ("multi", "ingest", "opens"):
        stack = MultiStack(workdir, args.stations)
    elif name == "calibrate":
        stack = NoopStack(workdir, args.stations)
    else:
        stack = PushpinStack(workdir, args.stations)
    try:
        if name == "ingest":
            return asyncio.run(ingest_scenario(stack, args))
        if name == "calibrate":
            return asyncio.run(calibrate_scenario(stack, args))
        if name == "opens":
            return asyncio.run(opens_scenario(stack, args))
        if name == "idle":
            return [asyncio.run(idle_scenario(stack, args))]
        return [asyncio.run(streaming_scenario(name, stack, args))]
    finally:
        stack.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Checked below, not with `choices`: argparse (3.11) checks an empty list against it.
    parser.add_argument(
        "scenarios",
        nargs="*",
        help=f"any of {', '.join(DEFAULTS)} (default: {' '.join(DEFAULT_RUN)})",
    )
    parser.add_argument("--subscribers", type=int)
    parser.add_argument("--stations", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-storm", action="store_true")
    parser.add_argument("--serve", action="store_true", help="(ingest) for bench/compare.py")
    options = parser.parse_args()
    unknown = [name for name in options.scenarios if name not in DEFAULTS]
    if unknown:
        known = ", ".join(DEFAULTS)
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; choose from {known}")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if options.serve:
        if options.scenarios != ["ingest"]:
            parser.error("--serve holds up the ingest scenario's servers only: --serve ingest")
        serve_ingest(scenario_args("ingest", options))
        return
    print(f"# bench on {os.cpu_count()} cores, nofile={hard}, {time.strftime('%Y-%m-%d %H:%M')}")
    for name in options.scenarios or DEFAULT_RUN:
        for line in run(name, scenario_args(name, options)):
            print(line, flush=True)


def scenario_args(name: str, options: argparse.Namespace) -> argparse.Namespace:
    """A scenario's sizes: its defaults, with whatever the command line set."""
    args = argparse.Namespace(**{**DEFAULTS[name], "storm": False, "batch": options.batch})
    args.storm = DEFAULTS[name].get("storm", False) and not options.no_storm
    for key in ("subscribers", "stations", "rate", "duration"):
        if getattr(options, key, None) is not None:
            setattr(args, key, getattr(options, key))
    return args


if __name__ == "__main__":
    main()
