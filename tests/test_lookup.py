"""The ingest's equipment cache (stations/lookup.py)."""

from stations import lookup


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
