"""Real Daphne processes for end-to-end tests, on a free port and a file database."""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PreparedDatabase:
    """A migrated database with demo stations and two all-station keys."""

    def __init__(self, url: str, ingest_key: str, subscribe_key: str):
        self.url = url
        self.ingest_key = ingest_key
        self.subscribe_key = subscribe_key


def manage(env: dict, *args: str) -> str:
    """manage.py in a child process; `env` on top of local mode's defaults."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "cgm.settings", "DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def prepare_database(url: str, stations: int = 12) -> PreparedDatabase:
    env = {"DATABASE_URL": url}
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "demo_data", "--stations", str(stations))
    ingest = manage(env, "createapikey", "e2e ingest", "--scope", "ingest").strip()
    subscribe = manage(env, "createapikey", "e2e reader", "--scope", "subscribe").strip()
    return PreparedDatabase(url, ingest, subscribe)


class DaphneServer:
    """One Daphne process serving cgm.asgi:application; restartable on the same data."""

    # Migrated databases with demo data, by station count, copied for each server.
    _templates: dict[int, tuple[Path, str, str]] = {}

    def __init__(
        self,
        workdir: Path,
        stations: int = 12,
        env: dict | None = None,
        share_with: "DaphneServer | None" = None,
        database: "PreparedDatabase | None" = None,
        daphne_args: tuple[str, ...] = (),
    ):
        """`share_with`: another worker process on the same database (file or server).
        `database`: a prepared PostgreSQL database instead of a fresh SQLite file."""
        self.workdir = workdir
        self.daphne_args = list(daphne_args)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "daphne.log"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "cgm.settings",
            "DATABASE_URL": database.url if database else f"sqlite:///{workdir / 'db.sqlite3'}",
            # Production-like: DEBUG off, so the settings must get what they need.
            "DEBUG": "0",
            "SECRET_KEY": "e2e-test-secret",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Plain HTTP on loopback: no HTTPS redirect, no secure-only cookies.
            "CGM_ALLOW_PLAIN_HTTP": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        if database is not None:
            self.ingest_key, self.subscribe_key = database.ingest_key, database.subscribe_key
            self.log_path = workdir / f"daphne-{self.port}.log"
            return
        if share_with is not None:
            self.ingest_key = share_with.ingest_key
            self.subscribe_key = share_with.subscribe_key
            self.log_path = workdir / f"daphne-{self.port}.log"
            return
        cached = self._templates.get(stations)
        if cached is None:
            self.manage("migrate", "--noinput", "-v0")
            self.manage("demo_data", "--stations", str(stations))
            ingest = self.manage("createapikey", "e2e ingest", "--scope", "ingest").strip()
            subscribe = self.manage("createapikey", "e2e reader", "--scope", "subscribe").strip()
            template_dir = tempfile.mkdtemp(prefix="cgm-template-")
            atexit.register(shutil.rmtree, template_dir, ignore_errors=True)
            template = Path(template_dir) / "db.sqlite3"
            shutil.copy(workdir / "db.sqlite3", template)
            self._templates[stations] = (template, ingest, subscribe)
        else:
            template, ingest, subscribe = cached
            shutil.copy(template, workdir / "db.sqlite3")
        # Keys valid for every station: the access-control tests make narrower ones.
        self.ingest_key = ingest
        self.subscribe_key = subscribe

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    def start(self) -> "DaphneServer":
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cgm.server",  # Daphne with the project's limits (cgm/server.py)
                # Twisted listens with a backlog of 50 by default: a burst of connections
                # (a reconnect storm, or Pushpin opening streams) would be refused.
                "-e",
                f"tcp:port={self.port}:interface=127.0.0.1:backlog=4096",
                *self.daphne_args,
                "cgm.asgi:application",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited early:\n{self.log()}")
            try:
                httpx.get(f"{self.url}/accounts/login/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not answer within 30 s:\n{self.log()}")

    def kill(self):
        """Hard stop (SIGKILL): no clean shutdown, like a crash or an OOM kill."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def shell(self, code: str) -> str:
        """Run Django ORM code in a separate process, as an admin's change would."""
        return self.manage("shell", "-c", code)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def threads(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
        )

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        )

    def open_db_files(self) -> int:
        """Open handles on the main database file: one per SQLite connection."""
        db = str(self.workdir / "db.sqlite3")
        count = 0
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                if os.readlink(fd) == db:
                    count += 1
            except OSError:
                pass
        return count

    def post(self, events, key: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.ingest_key}"}
        return httpx.post(
            f"{self.url}/api/event", json=events, timeout=30, headers=headers, **kwargs
        )

    @property
    def reader_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.subscribe_key}"}


def create_user(server, username: str, stations=(), **flags) -> None:
    """A user (password "pw-<username>") who may read `stations`, made in the server's
    database."""
    server.shell(
        "from django.contrib.auth.models import User\n"
        "from access.models import StationAccess\n"
        "from stations.models import Station\n"
        f"u = User.objects.create_user({username!r}, password='pw-{username}', **{flags!r})\n"
        f"for code in {list(stations)!r}:\n"
        "    StationAccess.objects.create(user=u, station=Station.objects.get(code=code))\n"
    )


def login(server, username: str) -> dict:
    """A fresh login session through the real form: its cookies (session and CSRF)."""
    with httpx.Client(base_url=server.url) as client:
        client.get("/accounts/login/")
        response = client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": f"pw-{username}",
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
        )
        assert response.status_code == 302, response.text
        return {"sessionid": client.cookies["sessionid"], "csrftoken": client.cookies["csrftoken"]}


def start_run_multi(database_url: str, env: dict, workers: int = 2):
    """scripts/run_multi.py on a free port (PostgreSQL at `database_url`, plus `env`,
    e.g. REDIS_URL and GRIP_URL), once it answers: (launcher, port, banner, pids). The
    caller terminates the launcher."""
    port = free_port()
    launcher = subprocess.Popen(
        [sys.executable, "scripts/run_multi.py", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "cgm.settings",
            "DATABASE_URL": database_url,
            "DEBUG": "0",
            "SECRET_KEY": "e2e-test-secret",
            "ALLOWED_HOSTS": "127.0.0.1",
            "CGM_ALLOW_PLAIN_HTTP": "1",
            **env,
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    banner = launcher.stdout.readline()  # printed once the processes are started
    if "(pids " not in banner:
        launcher.terminate()
        launcher.wait(20)
        raise RuntimeError(f"run_multi did not start: {banner!r}")
    pids = [int(p) for p in banner.split("(pids ")[1].rstrip(")\n").split()]
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=1)
            return launcher, port, banner, pids
        except httpx.TransportError:
            if time.monotonic() > deadline or launcher.poll() is not None:
                launcher.terminate()
                launcher.wait(20)
                raise RuntimeError("run_multi did not answer within 30 s") from None
            time.sleep(0.2)
