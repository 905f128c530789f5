"""API keys: creation, storage, signing, throttling, revocation; production settings."""

import io
import json
import os
import subprocess
import sys
import time

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client

from access.models import ApiKey, hash_key
from access.signing import sign_request
from access.throttle import ingest_limiter
from notifications.models import Notification
from tests.conftest import make_event
from tests.server import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def equipment():
    call_command("demo_data", stations=3, stdout=io.StringIO())
    cache.clear()
    ingest_limiter.reset()


def create_key(*args) -> str:
    out = io.StringIO()
    call_command("createapikey", *args, stdout=out)
    return out.getvalue()


def post(key, body, **headers):
    data = json.dumps(body).encode()
    return Client().post(
        "/api/event",
        data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}", **headers},
    )


def test_createapikey_prints_the_key_alone_and_stores_only_its_hash():
    output = create_key("java backend", "--scope", "ingest", "--station", "ST001")

    key = output.strip()
    assert output == key + "\n"
    assert key.startswith("cgm_")
    stored = ApiKey.objects.get(name="java backend")
    assert stored.key_hash == hash_key(key)
    assert key not in {stored.prefix, stored.key_hash, stored.name}
    assert [s.code for s in stored.stations.all()] == ["ST001"]
    assert not stored.all_stations


def test_createapikey_without_stations_makes_an_all_stations_key():
    create_key("webhooks", "--scope", "ingest")
    assert ApiKey.objects.get(name="webhooks").all_stations


def test_createapikey_refuses_unknown_stations():
    with pytest.raises(Exception, match="NOPE"):
        create_key("bad", "--scope", "ingest", "--station", "NOPE")
    assert not ApiKey.objects.filter(name="bad").exists()


def test_missing_and_wrong_keys_get_401_with_a_json_body():
    no_key = Client().post("/api/event", json.dumps(make_event()), content_type="application/json")
    assert no_key.status_code == 401
    assert no_key["WWW-Authenticate"].startswith("Bearer")
    assert no_key.json()["error"] == "unauthenticated"
    assert post("cgm_deadbeef_nope", make_event()).status_code == 401
    assert Notification.objects.count() == 0


def test_a_key_is_stamped_when_used():
    key = create_key("k", "--scope", "ingest").strip()
    assert ApiKey.objects.get(name="k").last_used_at is None
    assert post(key, make_event()).status_code == 201
    assert ApiKey.objects.get(name="k").last_used_at is not None


def test_a_station_limited_key_cannot_slip_a_foreign_event_into_a_batch():
    key = create_key("k", "--scope", "ingest", "--station", "ST001").strip()
    response = post(key, [make_event("ST001"), make_event("ST002")])
    assert response.status_code == 403
    assert list(response.json()["fields"]) == ["[1].stationId"]
    assert Notification.objects.count() == 0


def test_signed_keys_accept_only_fresh_correctly_signed_bodies():
    key = create_key("webhook", "--scope", "ingest", "--signed").strip()
    event = make_event()
    body = json.dumps(event).encode()

    def send(headers, data=body):
        return Client().post(
            "/api/event",
            data,
            content_type="application/json",
            headers={"Authorization": f"Bearer {key}", **headers},
        )

    unsigned = send({})
    assert unsigned.status_code == 401
    assert "X-Cgm-Signature" in unsigned.json()["message"]
    stale = send(sign_request(key, body, timestamp=int(time.time()) - 3600))
    assert stale.status_code == 401
    assert "replay window" in stale.json()["message"]
    tampered = send(sign_request(key, body), data=body.replace(b"ST001", b"ST002"))
    assert tampered.status_code == 401
    assert Notification.objects.count() == 0

    assert send(sign_request(key, body)).status_code == 201
    assert Notification.objects.count() == 1


def test_ingest_is_throttled_per_key_with_retry_after(settings):
    settings.CGM_INGEST_RATE = "3/m"
    fast = create_key("fast", "--scope", "ingest").strip()
    other = create_key("other", "--scope", "ingest").strip()

    statuses = [post(fast, make_event()).status_code for _ in range(4)]

    assert statuses == [201, 201, 201, 429]
    limited = post(fast, make_event())
    assert limited.json()["error"] == "throttled"
    assert int(limited["Retry-After"]) > 0
    # The limit is per key: another sender is not slowed down.
    assert post(other, make_event()).status_code == 201


def test_the_admin_lists_keys_and_revokes_them(admin_client):
    key = create_key("to revoke", "--scope", "ingest").strip()
    api_key = ApiKey.objects.get(name="to revoke")
    page = admin_client.get("/admin/access/apikey/")
    assert page.status_code == 200
    assert f"cgm_{api_key.prefix}_" in page.content.decode()
    assert key not in page.content.decode()

    admin_client.post(
        "/admin/access/apikey/",
        {"action": "revoke_keys", "_selected_action": [api_key.pk]},
    )

    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert post(key, make_event()).status_code == 401


def _settings_check(env: dict, *args) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "cgm.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_mode_refuses_to_start_without_a_secret_key_or_hosts():
    no_secret = _settings_check({"DEBUG": "0", "ALLOWED_HOSTS": "cgm.example"})
    assert no_secret.returncode != 0
    assert "SECRET_KEY must be set" in no_secret.stderr
    no_hosts = _settings_check({"DEBUG": "0", "SECRET_KEY": "x" * 60})
    assert no_hosts.returncode != 0
    assert "ALLOWED_HOSTS must be set" in no_hosts.stderr


def test_production_mode_passes_the_deploy_check_but_for_hsts_preload():
    result = _settings_check(
        {
            "DEBUG": "0",
            "SECRET_KEY": "k" * 20 + "Zq8#xv!2mP$w9rT&yL4@nB7^cF1*hJ6%",
            "ALLOWED_HOSTS": "cgm.example",
        },
        "--deploy",
        "--fail-level",
        "ERROR",
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    issues = [line for line in output.splitlines() if line.startswith("?: (")]
    # Preload is a commitment to browsers' HSTS lists: the operator opts in (README).
    assert [issue.split(")")[0] for issue in issues] == ["?: (security.W021"], output


def test_cross_origin_requests_are_allowed_only_for_listed_origins(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://ops.example"]
    client = Client()
    allowed = client.options(
        "/api/notifications",
        headers={"Origin": "https://ops.example", "Access-Control-Request-Method": "GET"},
    )
    assert allowed["Access-Control-Allow-Origin"] == "https://ops.example"
    assert "authorization" in allowed["Access-Control-Allow-Headers"]
    assert "last-event-id" in allowed["Access-Control-Allow-Headers"]
    other = client.options(
        "/api/notifications",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in other


def test_a_model_read_with_a_plain_cursor_may_only_have_columns_it_converts_as_the_orm():
    from django.core.exceptions import ImproperlyConfigured

    from cgm.db_rows import require_plain

    assert require_plain(ApiKey) == [f.attname for f in ApiKey._meta.concrete_fields]
    with pytest.raises(ImproperlyConfigured, match="extra, payload"):
        require_plain(Notification)  # JSON: a plain cursor gives its text


def test_a_key_read_for_a_stream_open_is_the_key_the_orm_reads():
    from access.policy import find_key

    api_key, raw = ApiKey.issue(name="plain read", scope=ApiKey.Scope.SUBSCRIBE)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at="2026-03-01T00:00:00Z")

    found = find_key(raw, cached=False)
    stored = ApiKey.objects.get(pk=api_key.pk)

    assert {f.attname: getattr(found, f.attname) for f in ApiKey._meta.concrete_fields} == {
        f.attname: getattr(stored, f.attname) for f in ApiKey._meta.concrete_fields
    }
    assert found.last_used_at.tzinfo is not None and found.all_stations is False
