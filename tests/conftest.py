import itertools

import pytest

from tests.server import DaphneServer, PreparedDatabase, prepare_database
from tests.services import create_pg_database, drop_pg_database, pg_url, require_postgres

_ids = itertools.count(1)


def make_event(station="ST001", **fields) -> dict:
    """A valid event in the seed's format; override any field."""
    event = {
        "id": f"evt-{next(_ids)}",
        "stationId": station,
        "boxId": f"{station}-B1",
        "connectorId": "1",
        "faultType": "SYSTEM_ERROR",
        "action": "SYSTEM_DATA_CHANGED",
        "message": "Connector overheated",
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not ...}


def key_client(scope: str, **kwargs):
    """A DRF test client presenting a new API key of `scope` (ApiKey.issue's arguments:
    all_stations=True, stations=[...])."""
    from rest_framework.test import APIClient

    from access.models import ApiKey

    _, key = ApiKey.issue(name=f"test {scope}", scope=scope, **kwargs)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture(autouse=True)
def default_fault_rules(request):
    """The fault rules' defaults in every test database. A migration installs them, but
    a transactional test's flush empties every table, rules included; and the rules
    are cached per process (faults/rules.py)."""
    from faults.rules import forget_rules

    forget_rules()
    marker = request.node.get_closest_marker("django_db")
    callspec = getattr(request.node, "callspec", None)
    parameters = set(callspec.params) if callspec is not None else set()  # e.g. a "db" param
    wanted = {"db", "transactional_db"} & (set(request.fixturenames) - parameters)
    if marker is not None:
        wanted.add("transactional_db" if marker.kwargs.get("transaction") else "db")
    if wanted:
        request.getfixturevalue(wanted.pop())
        from faults.defaults import install_default_rules
        from faults.models import EventRule, SeverityRule

        if not EventRule.objects.exists() and not SeverityRule.objects.exists():
            install_default_rules(EventRule, SeverityRule)
    yield
    forget_rules()


@pytest.fixture
def event_factory():
    return make_event


@pytest.fixture
def server(tmp_path):
    """A running Daphne on a fresh SQLite file with demo stations ST001..ST012."""
    srv = DaphneServer(tmp_path).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test databases; before they are dropped, the sessions that this
    process's long-lived threads still hold are ended. The ingest writer and the stream
    read threads keep their connection for the life of the process by design
    (group_commit.py, cgm/db_pool.py), so on PostgreSQL the test database would
    otherwise be "accessed by other users" and left behind."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="module")
def pg_template():
    """A migrated PostgreSQL database with demo stations and keys, per test module."""
    require_postgres()
    name = create_pg_database()
    prepared = prepare_database(pg_url(name))
    yield name, prepared
    drop_pg_database(name)


@pytest.fixture
def pg_database(pg_template):
    """A fresh copy of the template for one test."""
    template, prepared = pg_template
    name = create_pg_database(template=template)
    database = PreparedDatabase(pg_url(name), prepared.ingest_key, prepared.subscribe_key)
    database.name = name
    yield database
    drop_pg_database(name)
