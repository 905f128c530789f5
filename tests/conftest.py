import itertools

import pytest

from tests.server import DaphneServer

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


@pytest.fixture
def event_factory():
    return make_event


@pytest.fixture
def server(tmp_path):
    """A running Daphne on a fresh SQLite file with demo stations ST001..ST012."""
    srv = DaphneServer(tmp_path).start()
    yield srv
    srv.stop()
