"""Equipment lookups for the ingest, cached per process for a few seconds.

Stations, boxes and connectors change rarely and every event names them: reading
them once per event was a third of the ingest's queries. Found rows are kept for
CACHE_SECONDS; a change in this process clears the cache at once (signals below),
other processes see it within CACHE_SECONDS. Codes not found are never cached, so
a newly registered station is accepted immediately.

When the cache expires, the first lookup that misses reloads every key the cache held
in the same query as its own: one query per cache and expiry. Loading each key again
on its own next miss cost a query per station, box and connector every CACHE_SECONDS
(1,500 ORM queries per 10 s in each worker at 500 stations, 7 % of the server's CPU in
`bench/run.py multi`). A key that no longer exists is simply not loaded again.

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
_expires = 0.0
_generation = 0  # moves on at each clear(): a preload that raced a change is dropped
_stations: dict[str, Station] = {}
_boxes: dict[str, list[Box]] = {}
_connectors: dict[tuple[int, str], Connector] = {}
# Each cache's keys when it last expired, reloaded with its next miss (id(cache): keys).
_held_before: dict[int, set] = {}


def _fresh() -> None:
    global _expires
    now = time.monotonic()
    if now >= _expires:
        for cache in (_stations, _boxes, _connectors):
            _held_before[id(cache)] = _held_before.get(id(cache), set()) | cache.keys()
            cache.clear()
        _expires = now + CACHE_SECONDS


def _cached(cache: dict, wanted: set, load) -> dict:
    """The wanted keys found in `cache`, the rest loaded with load(keys) and kept.
    Answers from what it read and loaded itself: another thread may clear the cache
    at any moment (expiry), and re-reading it afterwards would miss rows just loaded."""
    with _lock:
        _fresh()
        found = {key: cache[key] for key in wanted if key in cache}
        missing = wanted - found.keys()
        reload = _held_before.pop(id(cache), set()) if missing else set()
    if missing:
        keys = list(missing | reload)
        loaded = {}
        try:
            for start in range(0, len(keys), _LOAD_CHUNK):  # (SQLite's limit on parameters)
                loaded.update(load(set(keys[start : start + _LOAD_CHUNK])))
        except BaseException:
            with _lock:  # the next miss reloads them instead
                _held_before[id(cache)] = _held_before.get(id(cache), set()) | reload
            raise
        with _lock:
            cache.update(loaded)
        found.update((key, loaded[key]) for key in missing if key in loaded)
    return found


# Rows keyed as each cache keys them: the lookups' loads and the preload share these.
def _by_code(stations) -> dict[str, Station]:
    return {station.code: station for station in stations}


def _boxes_by_code(boxes) -> dict[str, list[Box]]:
    found: dict[str, list[Box]] = {}
    for box in boxes:
        found.setdefault(box.code, []).append(box)
    return found


def _by_box_and_code(connectors) -> dict[tuple[int, str], Connector]:
    return {(connector.box_id, connector.code): connector for connector in connectors}


def stations_by_code(codes: set[str]) -> dict[str, Station]:
    # .order_by(): the models' default orderings join other tables; lookups need none.
    return _cached(
        _stations,
        codes,
        lambda missing: _by_code(Station.objects.filter(code__in=missing).order_by()),
    )


def boxes_by_code(codes: set[str]) -> dict[str, list[Box]]:
    return _cached(
        _boxes,
        codes,
        lambda missing: _boxes_by_code(Box.objects.filter(code__in=missing).order_by()),
    )


def connectors_by_box(boxes: list[Box], codes: set[str]) -> dict[tuple[int, str], Connector]:
    def load(missing):
        return _by_box_and_code(
            Connector.objects.filter(
                box__in={box_id for box_id, _ in missing}, code__in={code for _, code in missing}
            ).order_by()
        )

    return _cached(_connectors, {(box.pk, code) for box in boxes for code in codes}, load)


def preload(max_stations: int) -> bool:
    """Fill the caches with every station, box and connector, in three queries after
    counting the stations, when there are at most max_stations of them (0: never, and
    no query); True if it did. A larger
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
    stations = _by_code(Station.objects.order_by())
    boxes = _boxes_by_code(Box.objects.order_by())
    connectors = _by_box_and_code(Connector.objects.order_by())
    global _expires
    with _lock:
        if generation != _generation:
            return False  # equipment changed while it read: those rows may be stale
        for cache, loaded in ((_stations, stations), (_boxes, boxes), (_connectors, connectors)):
            cache.clear()
            cache.update(loaded)
            _held_before.pop(id(cache), None)
        _expires = time.monotonic() + CACHE_SECONDS
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
    global _expires, _generation
    with _lock:
        _expires = 0.0
        _generation += 1


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
