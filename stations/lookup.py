"""Equipment lookups for the ingest, cached per process for a few seconds.

Stations, boxes and connectors change rarely and every event names them: reading
them once per event was a third of the ingest's queries. Found rows are kept for
CACHE_SECONDS; a change in this process clears the cache at once (signals below),
other processes see it within CACHE_SECONDS. Codes not found are never cached, so
a newly registered station is accepted immediately.

When a cache is due (every CACHE_SECONDS), one lookup reloads every key it holds in
one query, with its own, while the other threads go on answering from the rows it
holds; the reload then replaces them (a key that no longer exists goes). Loading each
key again on its own next miss cost a query per station, box and connector every
CACHE_SECONDS (1,500 ORM queries per 10 s in each worker at 500 stations, 7 % of the
server's CPU in `bench/run.py multi`); and emptying the cache first made every request
in flight miss at once, a stall of 50-80 ms in every process every 10 s in the
2,000-stream benchmark (docs/SCALING.md, seventh session). A change in this process
(clear) does empty it at once; the next miss reloads what it held in one query.

A server process fills the caches before it serves (preload, from cgm/asgi.py) when the
catalogue is small enough: otherwise each station's first event after a start missed
in each process, three queries apiece, all in the first second of traffic, and that
burst on a busy machine queued the posts behind it for seconds (issue 13).
"""

import logging
import threading
import time

from django.conf import settings
from django.db import Error, connection, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from stations.models import Box, Connector, Station

logger = logging.getLogger(__name__)

CACHE_SECONDS = 10.0
_LOAD_CHUNK = 2000

_lock = threading.Lock()
_generation = 0  # moves on at each clear(): a load that raced a change is not kept
_stations: dict[str, Station] = {}
_boxes: dict[str, list[Box]] = {}
_connectors: dict[tuple[int, str], Connector] = {}
_CACHES = (_stations, _boxes, _connectors)
_due_at: dict[int, float] = {}  # id(cache): when its rows are next reloaded
# Each cache's keys when clear() emptied it, reloaded with its next miss (id(cache): keys).
_held_before: dict[int, set] = {}


def _cached(cache: dict, wanted: set, load) -> dict:
    """The wanted keys found in `cache`, the rest loaded with load(keys) and kept; when
    the cache is due, this caller reloads every key it holds, and the others answer
    from it meanwhile. Answers from what it read and loaded itself: another thread may
    change the cache at any moment, and re-reading it would miss rows just loaded."""
    with _lock:
        generation = _generation
        found = {key: cache[key] for key in wanted if key in cache}
        missing = wanted - found.keys()
        now = time.monotonic()
        reload = set()
        if now >= _due_at.get(id(cache), 0.0):
            _due_at[id(cache)] = now + CACHE_SECONDS  # the other threads: not due
            reload = set(cache.keys())
        if missing or reload:
            reload |= _held_before.pop(id(cache), set())
    keys = list(missing | reload)
    if not keys:
        return found
    loaded = {}
    try:
        for start in range(0, len(keys), _LOAD_CHUNK):  # (SQLite's limit on parameters)
            loaded.update(load(set(keys[start : start + _LOAD_CHUNK])))
    except BaseException:
        with _lock:  # the next lookup reloads them instead
            _held_before[id(cache)] = _held_before.get(id(cache), set()) | reload
            if reload:
                _due_at[id(cache)] = 0.0
        raise
    with _lock:
        if generation == _generation:
            for key in reload - loaded.keys():
                cache.pop(key, None)  # no longer in the database
            cache.update(loaded)
        else:  # a change came meanwhile: keep none of it; the next miss reloads them
            _held_before[id(cache)] = _held_before.get(id(cache), set()) | reload
    for key in wanted.intersection(keys):
        if key in loaded:
            found[key] = loaded[key]
        else:
            found.pop(key, None)
    return found


def stations_by_code(codes: set[str]) -> dict[str, Station]:
    # .order_by(): the models' default orderings join other tables; lookups need none.
    return _cached(
        _stations,
        codes,
        lambda missing: {s.code: s for s in Station.objects.filter(code__in=missing).order_by()},
    )


def boxes_by_code(codes: set[str]) -> dict[str, list[Box]]:
    def load(missing):
        found: dict[str, list[Box]] = {}
        for box in Box.objects.filter(code__in=missing).order_by():
            found.setdefault(box.code, []).append(box)
        return found

    return _cached(_boxes, codes, load)


def connectors_by_box(boxes: list[Box], codes: set[str]) -> dict[tuple[int, str], Connector]:
    def load(missing):
        rows = Connector.objects.filter(
            box__in={box_id for box_id, _ in missing}, code__in={code for _, code in missing}
        ).order_by()
        return {(c.box_id, c.code): c for c in rows}

    return _cached(_connectors, {(box.pk, code) for box in boxes for code in codes}, load)


def preload(max_stations: int) -> bool:
    """Fill the caches with every station, box and connector, in three queries, when
    there are at most max_stations stations (0: never); True if it did. A larger
    catalogue loads on demand as before (a process then holds only what it is asked
    about). Kept CACHE_SECONDS like any lookup; after that the held keys reload
    together."""
    if max_stations <= 0:
        return False
    count = Station.objects.count()
    if count > max_stations:
        logger.info(
            "equipment lookups not preloaded: %d stations, more than %d "
            "(CGM_LOOKUP_PRELOAD_MAX_STATIONS); they load on demand",
            count,
            max_stations,
        )
        return False
    with _lock:
        generation = _generation
    stations = {s.code: s for s in Station.objects.order_by()}
    boxes: dict[str, list[Box]] = {}
    for box in Box.objects.order_by():
        boxes.setdefault(box.code, []).append(box)
    connectors = {(c.box_id, c.code): c for c in Connector.objects.order_by()}
    with _lock:
        if generation != _generation:
            return False  # equipment changed while it read: those rows may be stale
        due = time.monotonic() + CACHE_SECONDS
        for cache, loaded in zip(_CACHES, (stations, boxes, connectors), strict=True):
            cache.clear()
            cache.update(loaded)
            _held_before.pop(id(cache), None)
            _due_at[id(cache)] = due
    logger.info(
        "equipment lookups preloaded: %d stations, %d boxes, %d connectors",
        len(stations),
        sum(len(b) for b in boxes.values()),
        len(connectors),
    )
    return True


def preload_at_start() -> None:
    """preload(CGM_LOOKUP_PRELOAD_MAX_STATIONS) for a server process starting. A
    database that cannot answer yet (not migrated, not up) does not stop the start:
    lookups then load on demand, and the error is logged."""
    try:
        preload(settings.CGM_LOOKUP_PRELOAD_MAX_STATIONS)
    except Error as exc:
        logger.warning("equipment lookups not preloaded (%s); they load on demand", exc)
    finally:
        # The start-up thread serves no requests: give its connection back.
        connection.close()


def clear() -> None:
    global _generation
    with _lock:
        _generation += 1
        for cache in _CACHES:
            _held_before[id(cache)] = _held_before.get(id(cache), set()) | cache.keys()
            cache.clear()


@receiver(post_save, sender=Station, dispatch_uid="lookup-station-save")
@receiver(post_delete, sender=Station, dispatch_uid="lookup-station-delete")
@receiver(post_save, sender=Box, dispatch_uid="lookup-box-save")
@receiver(post_delete, sender=Box, dispatch_uid="lookup-box-delete")
@receiver(post_save, sender=Connector, dispatch_uid="lookup-connector-save")
@receiver(post_delete, sender=Connector, dispatch_uid="lookup-connector-delete")
def equipment_changed(**kwargs):
    clear()
    # And once committed: a lookup between the change and its commit reloads (and
    # keeps for CACHE_SECONDS) the rows as they were. Outside a transaction this
    # second clear runs at once.
    transaction.on_commit(clear)
