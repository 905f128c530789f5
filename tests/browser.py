"""Real Chromium against a real Daphne: the fixtures and helpers of the console's tests.

Debian's Chromium (/usr/bin/chromium, installed by scripts/ensure-chromium.sh) driven by
Playwright; never `playwright install`, which downloads browsers this machine cannot
fetch. Without Chromium the tests skip, except in CI (CI=true), where they fail.

Set DASHBOARD_SCREENSHOTS=<dir> to save a screenshot of each test's final page (and the
named states a test saves with `shot`).
"""

import contextlib
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.server import DaphneServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATOR = "operator"
OPERATOR_PASSWORD = "dashboard-e2e-password"
# Generous for a loaded 2-core CI machine; on success the waits end as soon as they can.
RESUME_TIMEOUT_MS = 15_000
WAIT_MS = 10_000


def _browser_problem() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -r requirements-dev.txt"
    return None


@pytest.fixture(scope="module")
def browser():
    problem = _browser_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard browser tests must run in CI, but {problem}")
        print(f"skipping the dashboard browser tests: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server_env():
    """Extra environment for the test's server; a test overrides it with parametrize."""
    return {}


@pytest.fixture
def server(tmp_path, server_env):
    """A Daphne with demo stations ST001..ST012 and a superuser to sign in with."""
    srv = DaphneServer(tmp_path, env=server_env)
    env = srv.env
    srv.env = {**env, "DJANGO_SUPERUSER_PASSWORD": OPERATOR_PASSWORD}
    srv.manage("createsuperuser", "--noinput", "--username", OPERATOR, "--email", "op@example.com")
    srv.env = env
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    shots = os.environ.get("DASHBOARD_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(Path(shots) / f"{request.node.name}.png"))
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


# --- Helpers ---------------------------------------------------------------------------


def open_dashboard(page, server, query="", username=OPERATOR):
    """Open the dashboard as an operator would: sent to sign in, then back to the link."""
    page.goto(f"{server.url}/{query}")
    if "/accounts/login/" in page.url:
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", OPERATOR_PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
    assert page.url == f"{server.url}/{query}", page.url


def create_operator(server, username: str, stations: list[str]):
    """A plain (not staff) user assigned these stations."""
    server.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        "from access.models import StationAccess\n"
        "from stations.models import Station\n"
        f"user = User.objects.create_user({username!r}, password={OPERATOR_PASSWORD!r})\n"
        f"for code in {stations!r}:\n"
        "    StationAccess.objects.create(user=user, station=Station.objects.get(code=code))\n",
    )


def withdraw_access(server, username: str):
    """The user loses every station assigned to them (an admin's change)."""
    server.manage(
        "shell",
        "-c",
        "from access.models import StationAccess\n"
        f"StationAccess.objects.filter(user__username={username!r}).delete()",
    )


def shot(page, name: str):
    """Save a screenshot of the page's current state when DASHBOARD_SCREENSHOTS is set."""
    shots = os.environ.get("DASHBOARD_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)


def cursor(page) -> str:
    """The stream cursor the page would resume from: in the status pill's tooltip."""
    return page.get_attribute("#status", "data-cursor")


def status(page) -> str:
    return page.get_attribute("#status", "data-state")


def wait_live(page, timeout=WAIT_MS):
    page.wait_for_selector("#status[data-state=live]", timeout=timeout)


def wait_live_on(page, stations: int, timeout=WAIT_MS):
    """Live on a stream of that many stations (not the previous selection's stream)."""
    page.wait_for_function(
        """n => document.querySelector('#status').dataset.state === 'live'
            && document.querySelector('#status').dataset.cursor.split(',').length === n""",
        arg=stations,
        timeout=timeout,
    )


def wait_not_live(page, timeout=WAIT_MS):
    page.wait_for_function(
        "document.querySelector('#status').dataset.state !== 'live'", timeout=timeout
    )


def wait_for_rows(page, events, timeout=WAIT_MS):
    page.wait_for_function(
        """ids => ids.every(id =>
            document.querySelector(`#feed tbody tr[data-id="${CSS.escape(id)}"]`))""",
        arg=[event["id"] for event in events],
        timeout=timeout,
    )


def feed_ids(page, visible=False) -> list[str]:
    """Message ids of the log's rows, top (newest) first; `visible`: those the filters
    leave shown."""
    selector = "#feed tbody tr:not([hidden])" if visible else "#feed tbody tr"
    return page.eval_on_selector_all(selector, "rows => rows.map(r => r.dataset.id)")


def row_cells(page, event) -> list[str]:
    return page.eval_on_selector_all(
        f'#feed tbody tr[data-id="{event["id"]}"] td', "cells => cells.map(c => c.textContent)"
    )


def post(server, *events):
    for event in events:
        response = server.post(event)
        assert response.status_code == 201, response.text


class BadGateway:
    """What a reverse proxy answers while the service is down: 502 for every request.

    A browser's EventSource gives up for good on such an answer (readyState CLOSED),
    unlike a refused connection, which it retries by itself: only the page's own
    reconnect brings the feed back.
    """

    def __init__(self, port: int):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                body = b"502 Bad Gateway"
                self.send_response(502)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class StallingRelay:
    """A TCP relay in front of the server that can stall: stall() stops relaying on every
    connection, open or new, without closing any (no FIN, no RST), as a NAT or proxy
    timeout or a laptop's sleep does; resume() lets the bytes through again."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.stalled = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.sock]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while data := a.recv(65536):
                while self.stalled.is_set():
                    time.sleep(0.05)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stall(self):
        self.stalled.set()

    def resume(self):
        self.stalled.clear()

    def close(self):
        self.resume()
        for s in self.sockets:
            s.close()


@pytest.fixture
def new_page(browser):
    """More pages, each in a browser of its own (another operator) unless `context` is
    given; `init_script` runs before the page's own scripts. JavaScript errors on any of
    them fail the test."""
    contexts, errors = [], []

    def make(context=None, init_script=None, **options):
        if context is None:
            context = browser.new_context(**{"viewport": {"width": 1280, "height": 720}, **options})
            contexts.append(context)
        tab = context.new_page()
        if init_script:
            tab.add_init_script(init_script)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        return tab

    yield make
    for context in contexts:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def fault_items(page) -> list[dict]:
    """The fault list as shown, top first: id, severity, state and text."""
    return page.eval_on_selector_all(
        "#faults .fault-item:not([hidden])",
        """items => items.map(i => ({id: i.dataset.id, severity: i.dataset.severity,
            state: i.dataset.state, text: i.innerText}))""",
    )


def wait_for_faults(page, count: int, timeout=WAIT_MS):
    page.wait_for_function(
        "n => document.querySelectorAll('#faults .fault-item').length === n",
        arg=count,
        timeout=timeout,
    )
