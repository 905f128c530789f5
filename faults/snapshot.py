"""The state of some stations with the stream cursor it is valid at.

Read in one consistent transaction (REPEATABLE READ on PostgreSQL; on SQLite under
the writer lock, so no write lands between the reads): every change up to the cursor
is in the snapshot and none after it, so a client that loads this and streams with
lastEventId=<cursor> misses nothing and repeats nothing.
"""

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Count, Q

from faults.models import SEVERITY_RANK, Fault
from faults.wire import box_status_data, connector_status_data, fault_data
from notifications.log import consistent_read, log_positions
from notifications.wire import format_cursor
from stations.models import Box, Connector


class UnknownStationsError(Exception):
    def __init__(self, codes: list[str]):
        super().__init__(codes)
        self.codes = codes


def station_snapshot(codes: list[str]) -> dict:
    """{"cursor", "connectors", "boxes", "faults"}; raises UnknownStationsError."""
    with consistent_read():
        positions = log_positions(codes)
        missing = [code for code in codes if code not in positions]
        if missing:
            raise UnknownStationsError(missing)
        boxes = list(
            Box.objects.filter(station__code__in=codes)
            .select_related("station", "live")
            .order_by("station__code", "code")
        )
        connectors = list(
            Connector.objects.filter(box__station__code__in=codes)
            .select_related("box__station", "live")
            .order_by("box__station__code", "box__code", "code")
        )
        faults = list(
            Fault.objects.filter(station__code__in=codes)
            .exclude(state=Fault.State.RESOLVED)
            .select_related("station", "box", "connector")
        )
    faults.sort(key=lambda f: f.last_seen, reverse=True)
    faults.sort(key=lambda f: SEVERITY_RANK[f.severity])  # most severe first, then newest
    return {
        "cursor": format_cursor({code: positions[code].last_seq for code in codes}),
        "connectors": [
            connector_status_data(c.box.station, c.box, c, _live(c)) for c in connectors
        ],
        "boxes": [box_status_data(b.station, b, _live(b)) for b in boxes],
        "faults": [fault_data(f) for f in faults],
    }


def _live(equipment):
    try:
        return equipment.live
    except ObjectDoesNotExist:  # never reported yet
        return None


def open_fault_counts(codes) -> dict:
    """{code: {"critical", "error", "unacknowledged"}} of unresolved faults, for the
    console's station badges; `codes` None means every station. Stations without an
    unresolved fault are absent (zero everywhere)."""
    faults = Fault.objects.exclude(state=Fault.State.RESOLVED)
    if codes is not None:
        faults = faults.filter(station__code__in=list(codes))
    rows = (
        faults.values("station__code")
        .annotate(
            critical=Count("pk", filter=Q(severity="critical")),
            error=Count("pk", filter=Q(severity="error")),
            unacknowledged=Count("pk", filter=Q(state=Fault.State.OPEN)),
        )
        .order_by()
    )
    return {
        row["station__code"]: {
            "critical": row["critical"],
            "error": row["error"],
            "unacknowledged": row["unacknowledged"],
        }
        for row in rows
    }
