"""The two doors (cgm/asgi.py) on a real Daphne: one ingest path, one stream path.

Every request for /api/event takes the ingest door and every request under /api/sse/
the stream door, whatever headers it carries. So the answer to a request must not
depend on how it presents itself: with or without an Origin header, with its key in
`Authorization: Bearer` or in `X-Api-Key`, it gets the same status, the same JSON body
and the same headers; only the CORS headers differ, and only for an allowed Origin.
"""

import json
import time

import httpx
import psycopg
import pytest
from psycopg import sql

from access.signing import sign_request
from tests.conftest import make_event
from tests.server import DaphneServer, prepare_database
from tests.services import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    create_pg_database,
    drop_pg_database,
    pg_url,
    require_postgres,
)
from tests.sse import SSEStream

pytestmark = pytest.mark.e2e

ORIGIN = "https://dash.example"
STRANGER = "https://evil.example"
# A cross-origin dashboard, configured as the deployment guide would: its origin allowed
# for CORS (with credentials, for its session) and trusted for CSRF.
CORS_ENV = {
    "CORS_ALLOWED_ORIGINS": f"{ORIGIN},https://other.example",
    "CORS_ALLOW_CREDENTIALS": "1",
    "CSRF_TRUSTED_ORIGINS": ORIGIN,
}
A, B = "ST001", "ST002"
LIMIT = 1024 * 1024  # CGM_INGEST_MAX_BODY_BYTES's default
OVERSIZED = json.dumps(make_event(message="x" * (1_500_000))).encode()  # ~1.5 MB
PASSWORD = "doors-e2e-password"
KEY_CACHE_SECONDS = 2.5  # a server process keeps a key it looked up for 2 s (access/policy.py)

# The headers an answer is judged by, besides its status and body (CORS apart).
COMPARED_HEADERS = ("content-type", "www-authenticate", "retry-after", "allow")
CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials")


# --- Servers and callers -----------------------------------------------------------------


def issue_keys(server: DaphneServer, **specs) -> dict[str, str]:
    """API keys made in one manage.py process: name=(scope, station codes or None, signed)."""
    code = (
        "import json\n"
        "from access.models import ApiKey\n"
        "from stations.models import Station\n"
        "keys = {}\n"
        f"for name, (scope, codes, signed) in {specs!r}.items():\n"
        "    stations = list(Station.objects.filter(code__in=codes or []))\n"
        "    keys[name] = ApiKey.issue(name=name, scope=scope, stations=stations,\n"
        "                              all_stations=not codes, require_signature=signed)[1]\n"
        "print(json.dumps(keys))\n"
    )
    return json.loads(server.shell(code).strip().splitlines()[-1])


def create_user(server: DaphneServer, username: str, stations=()) -> None:
    server.shell(
        "from django.contrib.auth.models import User\n"
        "from access.models import StationAccess\n"
        "from stations.models import Station\n"
        f"u = User.objects.create_user({username!r}, password={PASSWORD!r})\n"
        f"for code in {list(stations)!r}:\n"
        "    StationAccess.objects.create(user=u, station=Station.objects.get(code=code))\n"
    )


def login(server: DaphneServer, username: str) -> dict[str, str]:
    """Log in through the real login form: the session and CSRF cookies."""
    with httpx.Client(base_url=server.url) as client:
        client.get("/accounts/login/")
        response = client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
        )
        assert response.status_code == 302, response.text
        return {"sessionid": client.cookies["sessionid"], "csrftoken": client.cookies["csrftoken"]}


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    """One Daphne for the matrices (no request here changes what another one sees)."""
    server = DaphneServer(tmp_path_factory.mktemp("doors"), env=CORS_ENV)
    server.keys = issue_keys(
        server,
        ingest=("ingest", None, False),
        ingest_a=("ingest", [A], False),
        subscribe=("subscribe", None, False),
        subscribe_a=("subscribe", [A], False),
        signed=("ingest", None, True),
    )
    create_user(server, "poster", stations=[A, B])
    server.start()
    yield server
    server.stop()


# --- Variants of one request -------------------------------------------------------------

# (key header, Origin): the same request presented every way a client may present it.
KEY_VARIANTS = [
    ("authorization", False),
    ("authorization", True),
    ("x-api-key", False),
    ("x-api-key", True),
]
NO_KEY_VARIANTS = [(None, False), (None, True)]


def variant_id(variant) -> str:
    style, origin = variant
    return f"{style or 'no key'}{' + Origin' if origin else ''}"


def credentials(key: str | None, style: str | None) -> dict[str, str]:
    if key is None:
        return {}
    if style == "authorization":
        return {"Authorization": f"Bearer {key}"}
    return {"X-Api-Key": key}


def answer(response: httpx.Response) -> dict:
    """What a client can observe of an answer, CORS headers apart."""
    return {
        "status": response.status_code,
        "body": response.json(),
        **{name: response.headers.get(name) for name in COMPARED_HEADERS},
    }


def assert_cors(headers: httpx.Headers, origin: bool, label: str) -> None:
    cors = {name: headers.get(name) for name in CORS_HEADERS}
    if origin:
        assert cors == {
            "access-control-allow-origin": ORIGIN,
            "access-control-allow-credentials": "true",
        }, label
    else:
        assert cors == dict.fromkeys(CORS_HEADERS), label


def assert_same_answer(responses: dict, expected: dict, defaults: dict | None = None) -> None:
    """Every variant's answer is exactly `expected` (over `defaults`: headers every answer
    of that door carries); CORS headers only with Origin."""
    answers = {variant_id(v): answer(r) for v, r in responses.items()}
    first = next(iter(answers.values()))
    # The whole answer (status, body, headers) of each variant, compared as one.
    assert answers == dict.fromkeys(answers, first), json.dumps(answers, indent=1)
    assert first == {**dict.fromkeys(COMPARED_HEADERS), **(defaults or {}), **expected}
    for variant, response in responses.items():
        assert_cors(response.headers, origin=variant[1], label=variant_id(variant))


def post_variant(
    server,
    variant,
    *,
    key=None,
    content=None,
    body=None,
    headers=None,
    method="POST",
    path="/api/event",
    **kwargs,
):
    style, origin = variant
    sent = {"Content-Type": "application/json", **credentials(key, style), **(headers or {})}
    if origin:
        sent["Origin"] = ORIGIN
    if body is not None:
        content = json.dumps(body).encode()
    return httpx.request(
        method, f"{server.url}{path}", content=content, headers=sent, timeout=30, **kwargs
    )


def wrong_key(key: str) -> str:
    """Well formed, with a real key's prefix, but not the key."""
    prefix, short, secret = key.split("_", 2)
    return f"{prefix}_{short}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"


def padded(event: dict, size: int) -> bytes:
    """A valid event, padded with trailing whitespace (still valid JSON) to `size` bytes."""
    return json.dumps(event).encode().ljust(size)


def chunked(data: bytes, size: int = 64 * 1024):
    """A body sent with Transfer-Encoding: chunked: no Content-Length to go by."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- The ingest door ---------------------------------------------------------------------

JSON = "application/json"
# DRF's APIView says what the endpoint allows on every answer.
INGEST_DEFAULTS = {"allow": "POST, OPTIONS"}
UNAUTHENTICATED = {"content-type": JSON, "www-authenticate": 'Bearer realm="cgm"'}
INGEST_SCOPE_NEEDED = {
    "error": "forbidden",
    "message": "Posting events needs an API key with the ingest scope.",
}
TOO_LARGE = {
    "status": 413,
    "body": {"error": "too_large", "message": f"The body is larger than {LIMIT} bytes."},
    "content-type": JSON,
}


def _signed_headers(server, body: bytes) -> dict:
    return sign_request(server.keys["signed"], body)


# name: (key name or None or "wrong", how to send, expected answer)
INGEST_ERRORS = {
    "no key": (
        None,
        lambda server: {"body": make_event(id="no-key")},
        {
            "status": 401,
            "body": {
                "error": "unauthenticated",
                "message": "Authentication credentials were not provided.",
            },
            **UNAUTHENTICATED,
        },
    ),
    "wrong key": (
        "wrong",
        lambda server: {"body": make_event(id="wrong-key")},
        {
            "status": 401,
            "body": {"error": "unauthenticated", "message": "Invalid or revoked API key."},
            **UNAUTHENTICATED,
        },
    ),
    "subscribe key posting": (
        "subscribe",
        lambda server: {"body": make_event(id="by-reader")},
        {"status": 403, "body": INGEST_SCOPE_NEEDED, "content-type": JSON},
    ),
    "key for ST001 posting ST002": (
        "ingest_a",
        lambda server: {"body": make_event(B, id="a-posts-b")},
        {
            "status": 403,
            "body": {
                "error": "forbidden",
                "message": "Station outside this key; nothing was stored.",
                "fields": {"stationId": ["This key may not post for station 'ST002'."]},
            },
            "content-type": JSON,
        },
    ),
    "1.5 MB body (declared Content-Length over the limit)": (
        "ingest",
        lambda server: {"content": OVERSIZED},
        TOO_LARGE,
    ),
    "1.5 MB body, chunked (no Content-Length: counted as it arrives)": (
        "ingest",
        lambda server: {"content": chunked(OVERSIZED)},
        TOO_LARGE,
    ),
    "one byte over the limit": (
        "ingest",
        lambda server: {"content": padded(make_event(id="one-over"), LIMIT + 1)},
        TOO_LARGE,
    ),
    "one byte over the limit, chunked": (
        "ingest",
        lambda server: {"content": chunked(padded(make_event(id="one-over-c"), LIMIT + 1))},
        TOO_LARGE,
    ),
    "1.5 MB body with a signed key and a valid signature": (
        "signed",
        lambda server: {"content": OVERSIZED, "headers": _signed_headers(server, OVERSIZED)},
        TOO_LARGE,
    ),
    "1.5 MB body with a signed key and no signature": (
        "signed",
        lambda server: {"content": OVERSIZED},
        TOO_LARGE,
    ),
    "1.5 MB chunked body with a signed key": (
        "signed",
        lambda server: {
            "content": chunked(OVERSIZED),
            "headers": _signed_headers(server, OVERSIZED),
        },
        TOO_LARGE,
    ),
    "wrong content type": (
        "ingest",
        lambda server: {
            "content": json.dumps(make_event(id="as-text")).encode(),
            "headers": {"Content-Type": "text/plain"},
        },
        {
            "status": 415,
            "body": {
                "error": "unsupported_media_type",
                "message": 'Unsupported media type "text/plain" in request.',
            },
            "content-type": JSON,
        },
    ),
    "invalid JSON": (
        "ingest",
        lambda server: {"content": b'{"id": "half'},
        {
            "status": 400,
            "body": {
                "error": "invalid_json",
                "message": "The body is not valid JSON.",
                "fields": {
                    "body": [
                        "JSON parse error - Unterminated string starting at: "
                        "line 1 column 8 (char 7)"
                    ]
                },
            },
            "content-type": JSON,
        },
    ),
    "invalid event": (
        "ingest",
        lambda server: {"body": make_event(id="invalid", stationId=..., faultType=42)},
        {
            "status": 400,
            "body": {
                "error": "invalid",
                "message": "The event is invalid.",
                "fields": {
                    "stationId": ["This field is required."],
                    "faultType": ["Not a valid string."],
                },
            },
            "content-type": JSON,
        },
    ),
    "GET instead of POST": (
        "ingest",
        lambda server: {"method": "GET"},
        {
            "status": 405,
            "body": {"error": "method_not_allowed", "message": 'Method "GET" not allowed.'},
            "content-type": JSON,
        },
    ),
    "signed key, bad signature": (
        "signed",
        lambda server: {
            "body": make_event(id="tampered"),
            # Signed for another body.
            "headers": _signed_headers(server, json.dumps(make_event(id="other")).encode()),
        },
        {
            "status": 401,
            "body": {
                "error": "unauthenticated",
                "message": "X-Cgm-Signature does not match the body.",
            },
            **UNAUTHENTICATED,
        },
    ),
    "signed key, no signature": (
        "signed",
        lambda server: {"body": make_event(id="unsigned")},
        {
            "status": 401,
            "body": {
                "error": "unauthenticated",
                "message": "This key requires X-Cgm-Timestamp and X-Cgm-Signature headers.",
            },
            **UNAUTHENTICATED,
        },
    ),
}


@pytest.mark.parametrize("case", list(INGEST_ERRORS))
def test_every_ingest_error_is_the_same_answer_however_the_request_presents_itself(door, case):
    key_name, request, expected = INGEST_ERRORS[case]
    if key_name == "wrong":
        key = wrong_key(door.keys["ingest"])
    else:
        key = door.keys[key_name] if key_name else None
    variants = KEY_VARIANTS if key else NO_KEY_VARIANTS

    responses = {
        variant: post_variant(door, variant, key=key, **request(door)) for variant in variants
    }

    assert_same_answer(responses, expected, INGEST_DEFAULTS)


def test_a_session_caller_without_a_key_is_forbidden_not_unauthenticated(door):
    """Logged in (so authenticated), with a valid CSRF token: but posting needs a key."""
    cookies = login(door, "poster")
    responses = {}
    for variant in NO_KEY_VARIANTS:
        with httpx.Client(cookies=cookies) as client:
            responses[variant] = client.post(
                f"{door.url}/api/event",
                json=make_event(id=f"by-session-{variant[1]}"),
                headers={
                    "X-CSRFToken": cookies["csrftoken"],
                    **({"Origin": ORIGIN} if variant[1] else {}),
                },
            )

    assert_same_answer(
        responses,
        {"status": 403, "body": INGEST_SCOPE_NEEDED, "content-type": JSON},
        INGEST_DEFAULTS,
    )


def _stored_answer(response: httpx.Response) -> dict:
    """A 201's answer without what differs from event to event."""
    body = dict(response.json())
    for name in ("id", "seq", "receivedAt"):
        body.pop(name)
    return {**answer(response), "body": body}


def test_a_good_post_is_stored_alike_however_it_presents_itself(door):
    """Plain keys and signed keys with a good signature: 201, the same answer each way."""
    for key_name in ("ingest", "signed"):
        key = door.keys[key_name]
        responses, events = {}, {}
        for variant in KEY_VARIANTS:
            # A notice: each post takes exactly one number of the station's log.
            event = make_event(
                "ST003", id=f"good-{key_name}-{variant_id(variant)}", faultType="GENERAL"
            )
            events[variant] = event
            content = json.dumps(event).encode()
            headers = sign_request(key, content) if key_name == "signed" else {}
            responses[variant] = post_variant(
                door, variant, key=key, content=content, headers=headers
            )

        for variant, response in responses.items():
            assert response.status_code == 201, (key_name, variant_id(variant), response.text)
            assert response.json()["id"] == events[variant]["id"]
            assert_cors(response.headers, origin=variant[1], label=variant_id(variant))
        answers = {variant_id(v): _stored_answer(r) for v, r in responses.items()}
        first = next(iter(answers.values()))
        assert answers == dict.fromkeys(answers, first)
        assert {k: first[k] for k in COMPARED_HEADERS} == {
            **dict.fromkeys(COMPARED_HEADERS),
            **INGEST_DEFAULTS,
            "content-type": JSON,
        }
        # Sequence numbers: one per post, in order (a signed post is stored once too).
        seqs = [responses[v].json()["seq"] for v in KEY_VARIANTS]
        assert seqs == list(range(seqs[0], seqs[0] + len(KEY_VARIANTS)))


def test_a_body_of_exactly_the_limit_is_accepted(door):
    event = make_event("ST003", id="exactly-the-limit")
    content = padded(event, LIMIT)
    assert len(content) == LIMIT

    response = post_variant(door, KEY_VARIANTS[0], key=door.keys["ingest"], content=content)

    assert response.status_code == 201, response.text
    assert response.json()["id"] == event["id"]


def test_the_trailing_slash_path_is_the_same_door(door):
    key = door.keys["ingest"]
    bad = {"body": make_event(id="slash-invalid", action=...)}
    answers = [
        answer(post_variant(door, KEY_VARIANTS[0], key=key, path=path, **bad))
        for path in ("/api/event", "/api/event/")
    ]
    assert answers[0] == answers[1]
    assert answers[0]["body"]["fields"] == {"action": ["This field is required."]}

    event = make_event("ST003", id="by-the-slash")
    stored = post_variant(door, KEY_VARIANTS[0], key=key, body=event, path="/api/event/")
    assert stored.status_code == 201, stored.text
    assert stored.json()["id"] == event["id"]


def test_a_chunked_post_without_content_length_is_stored_like_any_other(door):
    """HTTP/1.1 senders may stream a body (Transfer-Encoding: chunked). The door reads
    it whole (and counts it against the limit): the view must see that body, not an
    empty one; and a signed key's signature covers the body as sent."""
    plain = make_event("ST003", id="chunked-plain")
    at_limit = make_event("ST003", id="chunked-at-the-limit")
    signed = make_event("ST003", id="chunked-signed")
    signed_body = json.dumps(signed).encode()
    responses = {
        "plain key": post_variant(
            door,
            KEY_VARIANTS[0],
            key=door.keys["ingest"],
            content=chunked(json.dumps(plain).encode()),
        ),
        "plain key, exactly the limit": post_variant(
            door, KEY_VARIANTS[2], key=door.keys["ingest"], content=chunked(padded(at_limit, LIMIT))
        ),
        "signed key": post_variant(
            door,
            KEY_VARIANTS[1],
            key=door.keys["signed"],
            content=chunked(signed_body),
            headers=sign_request(door.keys["signed"], signed_body),
        ),
    }

    answers = {name: (r.status_code, r.json().get("id", r.json())) for name, r in responses.items()}
    assert answers == {
        "plain key": (201, plain["id"]),
        "plain key, exactly the limit": (201, at_limit["id"]),
        "signed key": (201, signed["id"]),
    }


def test_a_throttled_key_gets_429_with_retry_after_however_it_presents_itself(tmp_path):
    server = DaphneServer(tmp_path, env={**CORS_ENV, "CGM_INGEST_RATE": "1/m"})
    # A key per variant: each gets its one post a minute, then the same refusal.
    keys = issue_keys(
        server, **{f"k{index}": ("ingest", None, False) for index in range(len(KEY_VARIANTS))}
    )
    server.start()
    try:
        responses = {}
        for index, variant in enumerate(KEY_VARIANTS):
            key = keys[f"k{index}"]
            first = post_variant(server, variant, key=key, body=make_event(id=f"t{index}-1"))
            assert first.status_code == 201, first.text
            responses[variant] = post_variant(
                server, variant, key=key, body=make_event(id=f"t{index}-2")
            )
    finally:
        server.stop()

    # 1/m: the next request is due a minute after the first (well under a second ago).
    assert_same_answer(
        responses,
        {
            "status": 429,
            "body": {
                "error": "throttled",
                "message": "Request was throttled. Expected available in 60 seconds.",
            },
            "content-type": JSON,
            "retry-after": "60",
        },
        INGEST_DEFAULTS,
    )


def preflight(server, path: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(
        f"{server.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


def test_a_cors_preflight_from_an_allowed_origin_is_answered_with_the_allow_headers(door):
    response = preflight(door, "/api/event", ORIGIN)

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert "POST" in methods
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    # What a browser's device simulator or a signed webhook sender needs to send.
    needed = {"authorization", "content-type", "x-api-key", "x-cgm-timestamp", "x-cgm-signature"}
    assert needed <= allowed
    assert int(response.headers["access-control-max-age"]) > 0


def test_a_cors_preflight_from_another_origin_gets_no_allow_origin(door):
    response = preflight(door, "/api/event", STRANGER)

    assert response.status_code == 200
    for name in (*CORS_HEADERS, "access-control-allow-methods", "access-control-allow-headers"):
        assert name not in response.headers, name


def test_a_post_from_another_origin_gets_its_answer_without_cors_headers(door):
    """Not in the list: the browser may not read the answer; the server says nothing more."""
    response = httpx.post(
        f"{door.url}/api/event",
        json=make_event(id="from-a-stranger"),
        headers={"Origin": STRANGER},
    )

    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthenticated",
        "message": "Authentication credentials were not provided.",
    }
    for name in CORS_HEADERS:
        assert name not in response.headers


# --- The database goes away: 503, then the same request is stored once ---------------------


def _pg_admin():
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    )


def set_connections_allowed(name: str, allowed: bool) -> None:
    """ALLOW_CONNECTIONS binds superusers too (unlike REVOKE CONNECT); on the way out the
    server's pooled connections are cut as well, as a database restart would."""
    with _pg_admin() as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allowed)
            )
        )
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )


def stored_rows(name: str, message_id: str) -> list[tuple[str, int]]:
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=name) as conn:
        return conn.execute(
            "SELECT s.code, n.seq FROM notifications_notification n "
            "JOIN stations_station s ON s.id = n.station_id WHERE n.message_id = %s",
            [message_id],
        ).fetchall()


@pytest.fixture
def pg_door(tmp_path):
    require_postgres()
    name = create_pg_database()
    server = None
    try:
        database = prepare_database(pg_url(name), stations=3)
        # While the database is away a request waits DB_POOL_TIMEOUT for a connection.
        server = DaphneServer(
            tmp_path, env={**CORS_ENV, "DB_POOL_TIMEOUT": "1"}, database=database
        ).start()
        yield server, name
    finally:
        if server is not None:
            server.stop()
        drop_pg_database(name)


def test_a_database_outage_answers_503_retry_after_1_and_the_retry_is_stored_once(pg_door):
    server, name = pg_door
    # Notices: one log number per event, so the retry's seq is 2.
    warm = make_event(A, id="before-the-outage", faultType="GENERAL")
    assert server.post(warm).status_code == 201

    event = make_event(A, id="during-the-outage", faultType="GENERAL")
    set_connections_allowed(name, False)
    try:
        # At once (the key still in the server's cache: the writer meets the outage),
        # then once the key must be read from the database (authentication meets it).
        during = {}
        for round_ in ("key cached", "key read"):
            if round_ == "key read":
                time.sleep(KEY_CACHE_SECONDS)
            for style, origin in KEY_VARIANTS:
                variant = (f"{style} ({round_})", origin)
                during[variant] = post_variant(
                    server, (style, origin), key=server.ingest_key, body=event
                )
        stream = {
            variant: stream_request(
                server, "GET", f"/api/sse/stations/{A}/", variant, key=server.subscribe_key
            )
            for variant in KEY_VARIANTS
        }
    finally:
        set_connections_allowed(name, True)

    assert_same_answer(
        during,
        {
            "status": 503,
            "body": {
                "error": "unavailable",
                "message": "The database did not answer; the event may not be stored. "
                "Retry with the same id: a repeated id is stored once.",
            },
            "content-type": JSON,
            "retry-after": "1",
        },
        INGEST_DEFAULTS,
    )
    assert_same_answer(
        stream,
        {
            "status": 503,
            "body": {
                "error": "unavailable",
                "message": "The database did not answer; retry shortly.",
            },
            "content-type": JSON,
            "retry-after": "1",
        },
    )
    assert stored_rows(name, event["id"]) == []

    # The client does what the answer says: retry after a second, same id.
    deadline = time.monotonic() + 30
    retry = server.post(event)
    while retry.status_code == 503 and time.monotonic() < deadline:
        time.sleep(int(retry.headers["retry-after"]))
        retry = server.post(event)
    assert retry.status_code == 201, retry.text
    assert retry.json()["id"] == event["id"]
    # The failed attempts used up no sequence number.
    assert retry.json()["seq"] == 2
    again = server.post(event)
    assert again.status_code == 200
    assert again.json() == retry.json()
    assert stored_rows(name, event["id"]) == [(A, 2)]


# --- The stream door ---------------------------------------------------------------------


def stream_request(server, method, path, variant, *, key=None, **kwargs) -> httpx.Response:
    """One request to the stream door. An error answer is read whole; a stream that
    opens (200) is closed at once, its body unread, so a wrong 200 fails the test
    instead of hanging it."""
    style, origin = variant
    headers = credentials(key, style)
    if origin:
        headers["Origin"] = ORIGIN
    with httpx.Client(timeout=10) as client:
        with client.stream(method, f"{server.url}{path}", headers=headers, **kwargs) as response:
            if response.status_code != 200:
                response.read()
            return response


STREAM_UNAUTHENTICATED = {"content-type": JSON, "www-authenticate": 'Bearer realm="cgm"'}

# name: (method, path, key name or None or "wrong", extra request arguments, expected)
STREAM_ERRORS = {
    "no credentials": (
        "GET",
        f"/api/sse/stations/{A}/",
        None,
        {},
        {
            "status": 401,
            "body": {
                "error": "unauthenticated",
                "message": "Log in, or send a subscribe API key or a stream token.",
            },
            **STREAM_UNAUTHENTICATED,
        },
    ),
    "wrong key": (
        "GET",
        f"/api/sse/stations/{A}/",
        "wrong",
        {},
        {
            "status": 401,
            "body": {"error": "unauthenticated", "message": "Invalid or revoked API key."},
            **STREAM_UNAUTHENTICATED,
        },
    ),
    "bad token": (
        "GET",
        f"/api/sse/stations/{A}/?token=not-a-token",
        None,
        {},
        {
            "status": 401,
            "body": {
                "error": "unauthenticated",
                "message": "Invalid, expired or ended stream token.",
            },
            **STREAM_UNAUTHENTICATED,
        },
    ),
    "ingest key on a stream": (
        "GET",
        f"/api/sse/stations/{A}/",
        "ingest",
        {},
        {
            "status": 403,
            "body": {
                "error": "forbidden",
                "message": "Streams need an API key with the subscribe or operate scope.",
            },
            "content-type": JSON,
        },
    ),
    "key for ST001 asking ST002": (
        "GET",
        f"/api/sse/stations/{B}/",
        "subscribe_a",
        {},
        {
            "status": 403,
            "body": {
                "error": "forbidden",
                "message": "Not allowed to read these stations.",
                "fields": {"station": [B]},
            },
            "content-type": JSON,
        },
    ),
    "key for ST001 asking ST001 and ST002": (
        "GET",
        f"/api/sse/?station={A}&station={B}",
        "subscribe_a",
        {},
        {
            "status": 403,
            "body": {
                "error": "forbidden",
                "message": "Not allowed to read these stations.",
                "fields": {"station": [B]},
            },
            "content-type": JSON,
        },
    ),
    "unknown station": (
        "GET",
        "/api/sse/stations/ST999/",
        "subscribe",
        {},
        {
            "status": 404,
            "body": {
                "error": "not_found",
                "message": "Unknown station.",
                "fields": {"station": ["ST999"]},
            },
            "content-type": JSON,
        },
    ),
    "unknown path": (
        "GET",
        "/api/sse/nope/",
        "subscribe",
        {},
        {
            "status": 404,
            "body": {"error": "not_found", "message": "No stream at /api/sse/nope/."},
            "content-type": JSON,
        },
    ),
    "PUT": (
        "PUT",
        f"/api/sse/stations/{A}/",
        "subscribe",
        {"json": {"station": A}},
        {
            "status": 405,
            "body": {"error": "method_not_allowed", "message": "Method PUT not allowed."},
            "content-type": JSON,
            "allow": "GET, HEAD",
        },
    ),
    "no station": (
        "GET",
        "/api/sse/",
        "subscribe",
        {},
        {
            "status": 400,
            "body": {
                "error": "invalid",
                "message": "Name at least one station.",
                "fields": {"station": ["Required."]},
            },
            "content-type": JSON,
        },
    ),
    "malformed station": (
        "GET",
        "/api/sse/?station=ST001&station=no%20such!",
        "subscribe",
        {},
        {
            "status": 400,
            "body": {
                "error": "invalid",
                "message": "Malformed station code.",
                "fields": {"station": ["no such!"]},
            },
            "content-type": JSON,
        },
    ),
}


@pytest.mark.parametrize("case", list(STREAM_ERRORS))
def test_every_stream_error_is_the_same_answer_however_the_request_presents_itself(door, case):
    method, path, key_name, kwargs, expected = STREAM_ERRORS[case]
    if key_name == "wrong":
        key = wrong_key(door.keys["subscribe"])
    else:
        key = door.keys[key_name] if key_name else None
    variants = KEY_VARIANTS if key else NO_KEY_VARIANTS

    responses = {
        variant: stream_request(door, method, path, variant, key=key, **kwargs)
        for variant in variants
    }

    assert_same_answer(responses, expected)


def test_a_cors_preflight_for_a_stream_allows_the_origin(door):
    allowed = preflight(door, f"/api/sse/stations/{A}/", ORIGIN, method="GET")
    stranger = preflight(door, f"/api/sse/stations/{A}/", STRANGER, method="GET")

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in allowed.headers["access-control-allow-methods"]
    assert stranger.status_code == 200
    assert "access-control-allow-origin" not in stranger.headers


def test_a_stream_opened_from_an_allowed_origin_carries_cors_and_delivers(door):
    key = door.keys["subscribe_a"]
    url = f"{door.url}/api/sse/stations/{A}/"
    cross = SSEStream(url, headers={"Origin": ORIGIN, "X-Api-Key": key})
    local = SSEStream(url, headers={"Authorization": f"Bearer {key}"})
    try:
        for stream, origin in ((cross, True), (local, False)):
            assert stream.status_code == 200
            assert stream.response_headers["content-type"].startswith("text/event-stream")
            assert stream.response_headers["cache-control"] == "no-cache"
            assert_cors(stream.response_headers, origin=origin, label=f"origin={origin}")
            assert stream.next_of("stream-open").json()["stations"] == [A]

        event = make_event(A, id="to-the-cross-origin-dashboard")
        assert door.post(event, key=door.keys["ingest"]).status_code == 201

        for stream in (cross, local):
            received = stream.next_of("notification")
            assert received.json()["id"] == event["id"]
            assert received.id == f"{A}:{received.json()['seq']}"
    finally:
        cross.close()
        local.close()
