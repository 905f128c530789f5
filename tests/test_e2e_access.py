"""Access control on real Daphne processes: no leaks across stations, revocation reaching
streams held by another worker process, stream tokens for EventSource clients."""

import time

import httpx
import pytest

from tests.conftest import make_event
from tests.server import DaphneServer, create_user, login
from tests.sse import SSEStream

pytestmark = pytest.mark.e2e

A, B = "ST001", "ST002"


@pytest.fixture
def two_workers(tmp_path):
    """Two Daphne processes on one database, as `make run-multi` would run them."""
    env = {"CGM_ACCESS_RECHECK_SECONDS": "1"}
    first = DaphneServer(tmp_path, env=env).start()
    second = DaphneServer(tmp_path, env=env, share_with=first).start()
    yield first, second
    first.stop()
    second.stop()


def test_no_event_of_b_reaches_callers_without_access_to_b(server):
    key_a = server.manage("createapikey", "reader A", "--scope", "subscribe", "--station", A)
    create_user(server, "op-a", stations=[A])
    by_key = SSEStream(f"{server.url}/api/sse/stations/{A}/", headers={"X-Api-Key": key_a.strip()})
    by_user = SSEStream(f"{server.url}/api/sse/stations/{A}/", cookies=login(server, "op-a"))
    for stream in (by_key, by_user):
        assert stream.status_code == 200
        stream.next_of("stream-open")

    server.post([make_event(B) for _ in range(5)])
    only_a = make_event(A)
    server.post(only_a)

    for stream in (by_key, by_user):
        received = stream.next_of("notification")
        assert received.json()["id"] == only_a["id"]
        assert stream.quiet("notification", 0.5) == []

    # Asking for B alongside A is refused as a whole.
    both = httpx.get(
        f"{server.url}/api/sse/?station={A}&station={B}", headers={"X-Api-Key": key_a.strip()}
    )
    assert both.status_code == 403


def test_revoking_a_key_ends_its_streams_on_another_worker(two_workers):
    first, second = two_workers
    key = first.manage("createapikey", "reader A", "--scope", "subscribe", "--station", A).strip()
    stream = SSEStream(
        f"{second.url}/api/sse/stations/{A}/", headers={"Authorization": f"Bearer {key}"}
    )
    stream.next_of("stream-open")

    first.manage("revokeapikey", key)

    error = stream.next_of("stream-error", timeout=10)
    assert error.json() == {"condition": "forbidden", "stations": [A]}
    assert stream.ended()
    again = httpx.get(
        f"{second.url}/api/sse/stations/{A}/", headers={"Authorization": f"Bearer {key}"}
    )
    assert again.status_code == 401


def test_removing_a_station_from_a_user_ends_that_stream_but_not_the_others(two_workers):
    first, second = two_workers
    create_user(first, "op-ab", stations=[A, B])
    cookies = login(first, "op-ab")
    on_a = SSEStream(f"{second.url}/api/sse/stations/{A}/", cookies=cookies)
    on_b = SSEStream(f"{second.url}/api/sse/stations/{B}/", cookies=cookies)
    on_a.next_of("stream-open")
    on_b.next_of("stream-open")

    first.shell(
        "from access.models import StationAccess\n"
        f"StationAccess.objects.filter(user__username='op-ab', station__code={A!r}).delete()\n"
    )

    assert on_a.next_of("stream-error", timeout=10).json()["stations"] == [A]
    assert on_a.ended()
    # B is still theirs: that stream goes on and keeps delivering.
    event = make_event(B)
    second.post(event)
    assert on_b.next_of("notification").json()["id"] == event["id"]


def test_deactivating_a_user_ends_all_their_streams(two_workers):
    first, second = two_workers
    create_user(first, "op-x", stations=[A])
    stream = SSEStream(f"{second.url}/api/sse/stations/{A}/", cookies=login(first, "op-x"))
    stream.next_of("stream-open")

    first.shell(
        "from django.contrib.auth.models import User\n"
        "u = User.objects.get(username='op-x'); u.is_active = False; u.save()\n"
    )

    assert stream.next_of("stream-error", timeout=10).json()["condition"] == "forbidden"
    assert stream.ended()


def test_eventsource_clients_use_a_short_lived_token(tmp_path):
    server = DaphneServer(tmp_path, env={"CGM_STREAM_TOKEN_SECONDS": "2"}).start()
    try:
        key = server.manage("createapikey", "reader A", "--scope", "subscribe", "--station", A)
        issued = httpx.post(
            f"{server.url}/api/stream-token", headers={"Authorization": f"Bearer {key.strip()}"}
        )
        assert issued.status_code == 200
        token = issued.json()["token"]
        assert issued.json()["expiresIn"] == 2

        # No header at all: the token in the URL is the credential.
        stream = SSEStream(f"{server.url}/api/sse/stations/{A}/?token={token}")
        assert stream.status_code == 200
        event = make_event(A)
        server.post(event)
        assert stream.next_of("notification").json()["id"] == event["id"]

        # The token carries the key's limits.
        assert httpx.get(f"{server.url}/api/sse/stations/{B}/?token={token}").status_code == 403
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert httpx.get(f"{server.url}/api/sse/stations/{A}/?token={forged}").status_code == 401
        time.sleep(3)
        assert httpx.get(f"{server.url}/api/sse/stations/{A}/?token={token}").status_code == 401
    finally:
        server.stop()
