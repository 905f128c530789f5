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
