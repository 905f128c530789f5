"""Equipment lookups for the ingest, cached per process for a few seconds.

Stations, boxes and connectors change rarely and every event names them: reading
them once per event was a third of the ingest's queries. Found rows are kept for
CACHE_SECONDS; a change in this process clears the cache at once (signals below),
other processes see it within CACHE_SECONDS. Codes not found are never cached, so
a newly registered station is accepted immediately.
"""

import threading
import time

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from stations.models import Box, Connector, Station

CACHE_SECONDS = 10.0

_lock = threading.Lock()
_expires = 0.0
_stations: dict[str, Station] = {}
_boxes: dict[str, list[Box]] = {}
_connectors: dict[tuple[int, str], Connector] = {}


def _fresh() -> None:
    global _expires
    now = time.monotonic()
    if now >= _expires:
        _stations.clear()
        _boxes.clear()
        _connectors.clear()
        _expires = now + CACHE_SECONDS


def stations_by_code(codes: set[str]) -> dict[str, Station]:
    with _lock:
        _fresh()
        missing = codes - _stations.keys()
    if missing:
        # .order_by(): the models' default orderings join other tables; lookups need none.
        found = {s.code: s for s in Station.objects.filter(code__in=missing).order_by()}
        with _lock:
            _stations.update(found)
    with _lock:
        return {code: _stations[code] for code in codes if code in _stations}


def boxes_by_code(codes: set[str]) -> dict[str, list[Box]]:
    with _lock:
        _fresh()
        missing = codes - _boxes.keys()
    if missing:
        found: dict[str, list[Box]] = {}
        for box in Box.objects.filter(code__in=missing).order_by():
            found.setdefault(box.code, []).append(box)
        with _lock:
            _boxes.update(found)
    with _lock:
        return {code: _boxes[code] for code in codes if code in _boxes}


def connectors_by_box(boxes: list[Box], codes: set[str]) -> dict[tuple[int, str], Connector]:
    wanted = {(box.pk, code) for box in boxes for code in codes}
    with _lock:
        _fresh()
        missing = wanted - _connectors.keys()
    if missing:
        rows = Connector.objects.filter(
            box__in={box_id for box_id, _ in missing}, code__in={code for _, code in missing}
        ).order_by()
        with _lock:
            _connectors.update({(c.box_id, c.code): c for c in rows})
    with _lock:
        return {key: _connectors[key] for key in wanted if key in _connectors}


def clear() -> None:
    global _expires
    with _lock:
        _expires = 0.0


@receiver(post_save, sender=Station, dispatch_uid="lookup-station-save")
@receiver(post_delete, sender=Station, dispatch_uid="lookup-station-delete")
@receiver(post_save, sender=Box, dispatch_uid="lookup-box-save")
@receiver(post_delete, sender=Box, dispatch_uid="lookup-box-delete")
@receiver(post_save, sender=Connector, dispatch_uid="lookup-connector-save")
@receiver(post_delete, sender=Connector, dispatch_uid="lookup-connector-delete")
def equipment_changed(**kwargs):
    clear()
