"""The ingest's equipment cache (stations/lookup.py)."""

import os

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection

from stations import lookup
from stations.models import Station


@pytest.fixture(autouse=True)
def empty_caches():
    # A test that fails half-way must not leave rows of a flushed database cached.
    lookup.clear()
    yield
    lookup.clear()


def test_a_lookup_answers_with_what_it_loaded_even_when_the_cache_expires_meanwhile():
    def load(missing):
        # Another thread finds the cache expired and clears it while this one loads.
        lookup.clear()
        lookup._fresh()
        return {code: f"row {code}" for code in missing}

    lookup.clear()
    assert lookup._cached(lookup._stations, {"ST001", "ST002"}, load) == {
        "ST001": "row ST001",
        "ST002": "row ST002",
    }
    # And what it loaded is cached for the next caller.
    assert lookup._cached(lookup._stations, {"ST001"}, lambda missing: {}) == {"ST001": "row ST001"}
    lookup.clear()


def test_after_expiry_one_miss_reloads_every_key_the_cache_held_in_one_load():
    loads = []

    def load(keys):
        loads.append(set(keys))
        return {code: f"row {code}" for code in keys if code != "GONE"}

    lookup.clear()
    lookup._fresh()
    lookup._cached(lookup._stations, {"ST001", "ST002", "GONE"}, load)
    lookup.clear()  # expired (or changed in this process)

    assert lookup._cached(lookup._stations, {"ST003"}, load) == {"ST003": "row ST003"}
    assert loads[-1] == {"ST001", "ST002", "ST003"}  # the held keys with the miss, at once
    loads.clear()
    # The others are cached again: no further load for them, and none asked twice.
    assert lookup._cached(lookup._stations, {"ST001", "ST002"}, load) == {
        "ST001": "row ST001",
        "ST002": "row ST002",
    }
    assert loads == []
    # A key that no longer exists is neither cached nor asked for again unprompted.
    assert lookup._cached(lookup._stations, {"GONE"}, load) == {}
    assert loads == [{"GONE"}]
    lookup.clear()


@pytest.mark.django_db(transaction=True)
def test_a_preloaded_process_answers_its_first_posts_lookups_without_a_query(
    django_assert_num_queries,
):
    call_command("demo_data", stations=3, stdout=open(os.devnull, "w"))  # noqa: SIM115
    lookup.clear()
    with django_assert_num_queries(4):  # the count, then stations, boxes, connectors
        assert lookup.preload(max_stations=3)

    with django_assert_num_queries(0):
        stations = lookup.stations_by_code({"ST001", "ST002"})
        boxes = lookup.boxes_by_code({"ST002-B1", "ST002-B2"})
        connectors = lookup.connectors_by_box(boxes["ST002-B2"], {"1", "2"})
    assert set(stations) == {"ST001", "ST002"}
    assert [box.station_id for box in boxes["ST002-B1"]] == [stations["ST002"].pk]
    assert sorted(code for _, code in connectors) == ["1", "2"]
    # A code not preloaded is not cached as missing: a station added afterwards is found
    # at once (added without the save signal, which would clear the caches anyway).
    assert lookup.stations_by_code({"ST100"}) == {}
    Station.objects.bulk_create([Station(code="ST100", name="new")])
    assert set(lookup.stations_by_code({"ST100"})) == {"ST100"}


@pytest.mark.django_db(transaction=True)
def test_a_catalogue_over_the_limit_is_not_preloaded_but_loaded_on_demand(
    django_assert_num_queries,
):
    call_command("demo_data", stations=3, stdout=open(os.devnull, "w"))  # noqa: SIM115
    lookup.clear()
    with django_assert_num_queries(1):  # the count only
        assert not lookup.preload(max_stations=2)
    with django_assert_num_queries(1):
        assert set(lookup.stations_by_code({"ST001"})) == {"ST001"}


@pytest.mark.django_db(transaction=True)
def test_a_database_that_cannot_answer_at_start_does_not_stop_the_start(caplog, settings):
    settings.CGM_LOOKUP_PRELOAD_MAX_STATIONS = 1000

    def refuse(execute, sql, params, many, context):
        raise OperationalError("the database is not up yet")

    lookup.clear()
    with connection.execute_wrapper(refuse):
        lookup.preload_at_start()
    assert "equipment lookups not preloaded (the database is not up yet)" in caplog.text
    # Nothing was cached: the first lookups load on demand.
    call_command("demo_data", stations=1, stdout=open(os.devnull, "w"))  # noqa: SIM115
    assert set(lookup.stations_by_code({"ST001"})) == {"ST001"}


@pytest.mark.django_db(transaction=True)
def test_preloading_is_off_at_zero_and_asks_the_database_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert not lookup.preload(max_stations=0)


@pytest.mark.django_db(transaction=True)
def test_a_preload_that_raced_an_equipment_change_keeps_nothing(django_assert_num_queries):
    call_command("demo_data", stations=1, stdout=open(os.devnull, "w"))  # noqa: SIM115

    def change_meanwhile(execute, sql, params, many, context):
        if "stations_connector" in sql:  # the preload's last read
            lookup.clear()  # what a save in this process does
        return execute(sql, params, many, context)

    with connection.execute_wrapper(change_meanwhile):
        assert not lookup.preload(max_stations=10)
    with django_assert_num_queries(1):  # nothing was kept: the lookup reads
        lookup.stations_by_code({"ST001"})
