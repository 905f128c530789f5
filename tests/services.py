"""The machine's PostgreSQL and a private Redis for tests that are about them.

On a machine without them these tests skip with the reason; under CI=true a missing
service is a failure, never a skip.
"""

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.server import free_port

PG_HOST = os.environ.get("CGM_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CGM_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CGM_TEST_PG_USER", "postgres")


def _answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def require_postgres() -> None:
    if not _answers(PG_PORT, PG_HOST):
        unavailable(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}")


def pg_url(name: str) -> str:
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def _admin():
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    )


def create_pg_database(template: str | None = None) -> str:
    name = f"cgm_e2e_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        else:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        conn.execute(query)
    return name


def drop_pg_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def pg_connections(name: str) -> int:
    with _admin() as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
        ).fetchone()[0]


class RedisServer:
    """A private redis-server on a free port, which a test may stop and start again."""

    def __init__(self):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            unavailable("redis-server is not installed")
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class PushpinServer:
    """A private Pushpin (scripts/run_pushpin.py) in front of one or more Daphnes."""

    def __init__(self, workdir, origins: list[int], key: str = "e2e-grip-key", log_level: int = 2):
        import shutil as _shutil

        if not (_shutil.which("pushpin") and _shutil.which("zurl")):
            installer = subprocess.run(
                ["bash", "scripts/ensure-pushpin.sh"], cwd=_root(), capture_output=True, text=True
            )
            if installer.returncode != 0:
                unavailable(f"pushpin/zurl missing and not installable: {installer.stderr.strip()}")
        self.port = free_port()
        # Pushpin's own ports (publish 5561, zmq 5560/5562/5563) shifted to a free range.
        self.offset = _free_offset()
        self.key = key
        self.log_level = log_level
        self.origins = origins
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grip_url(self) -> str:
        return f"http://127.0.0.1:{5561 + self.offset}?iss=pushpin&key={self.key}"

    def start(self, probe_headers: dict | None = None) -> "PushpinServer":
        """`probe_headers`: credentials for a stream request used as the readiness probe."""
        import sys as _sys

        args = [_sys.executable, "scripts/run_pushpin.py", "--port", str(self.port)]
        args += ["--port-offset", str(self.offset), "--key", self.key]
        args += ["--log-level", str(self.log_level)]
        for origin in self.origins:
            args += ["--origin", f"127.0.0.1:{origin}"]
        self.log_path = self.workdir / f"pushpin-{self.port}.log"
        self.process = subprocess.Popen(
            args,
            cwd=_root(),
            stdout=open(self.log_path, "wb"),  # noqa: SIM115 (kept open for the child)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not (_answers(self.port) and _answers(5561 + self.offset)):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"pushpin did not start:\n{self.log()}")
            time.sleep(0.1)
        # Listening is not ready: right after start its internal links (proxy, zurl,
        # handler) may still refuse a first request ("Accept service unavailable").
        # Ready means a stream request through it is held: all of them work.
        import httpx

        while True:
            try:
                if probe_headers is None:
                    ok = httpx.get(f"{self.url}/accounts/login/", timeout=2).status_code == 200
                else:
                    with httpx.stream(
                        "GET",
                        f"{self.url}/api/sse/stations/ST001/",
                        headers=probe_headers,
                        timeout=2,
                    ) as response:
                        ok = response.status_code == 200
                if ok:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"pushpin does not reach Django:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        import os as _os
        import signal as _signal

        if self.process is None:
            return
        # The whole group, also when the launcher has already exited: Pushpin's
        # processes may outlive it (a runner killed outright leaves its services).
        try:
            _os.killpg(self.process.pid, _signal.SIGTERM)
            self.process.wait(10)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            _os.killpg(self.process.pid, _signal.SIGKILL)
            self.process.wait(5)


def child_pids(pid: int) -> list[int]:
    """The pids whose parent is `pid` (each of its threads' children, from /proc); none
    once it is gone."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return []
    for task in tasks:
        try:
            found.extend(int(kid) for kid in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return sorted(found)


def descendant_pids(pid: int) -> list[int]:
    """Every process under `pid`: its children, theirs, and so on."""
    found = []
    for kid in child_pids(pid):
        found.append(kid)
        found.extend(descendant_pids(kid))
    return found


def _root():
    from tests.server import ROOT

    return ROOT


def _free_offset() -> int:
    for _ in range(50):
        offset = 1000 + (uuid.uuid4().int % 400) * 10
        if not any(_answers(base + offset) for base in (5560, 5561, 5562, 5563)):
            return offset
    raise RuntimeError("no free port range for Pushpin")
