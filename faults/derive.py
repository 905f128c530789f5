"""Faults and live status from newly stored notifications, on the one ingest path.

Runs inside the ingest's transaction (notifications/ingest/services.py), after the
notifications are inserted and with their stations' rows locked, so it is the only
writer of these stations' faults, statuses and log until commit: a crash leaves all of
it or none. The rules are the admin's (faults/rules.py); docs/FAULTS.md explains them.

Returns the log entries the changes make, in order: for each event its status change,
then its fault change. The caller numbers them after the event's notifications and
writes them to the log (notifications/log.py).
"""

from dataclasses import dataclass

from faults.models import EventRule, Fault, Severity
from faults.rules import current_rules
from faults.wire import box_status_data, connector_status_data, fault_data
from notifications.models import LogEntry, Notification
from stations.models import STATUSES, BoxStatus, ConnectorStatus, Station

OFFLINE = "OFFLINE"  # the fault the silence runner opens for a box that went quiet
_FAULT_FIELDS = [
    "severity", "state", "occurrences", "first_seen", "last_seen",
    "resolved_by", "resolved_at",
]  # fmt: skip
_SEVERITIES = frozenset(Severity.values)


@dataclass
class Change:
    """One entry for the station's log: a status or fault change, its data as it was."""

    station: Station
    kind: str
    data: dict
    fault: Fault | None = None  # a new fault gets its id in the data once inserted


def derive_changes(rows: list[Notification]) -> list[Change]:
    if not rows:
        return []
    deriving = _Derivation(rows)
    for row in rows:
        deriving.apply(row)
    return deriving.save()


def _key(station_id, box_id, connector_id, fault_type, code):
    return (station_id, box_id, connector_id, fault_type, code)


class _Derivation:
    def __init__(self, rows: list[Notification]):
        self.rules = current_rules()
        self.changes: list[Change] = []
        self.faults = _unresolved_faults(rows)
        box_ids = {row.box_id for row in rows if row.box_id is not None}
        connector_ids = {row.connector_id for row in rows if row.connector_id is not None}
        self.boxes = {s.pk: s for s in BoxStatus.objects.filter(pk__in=box_ids)} if box_ids else {}
        self.connectors = (
            {s.pk: s for s in ConnectorStatus.objects.filter(pk__in=connector_ids)}
            if connector_ids and any(_status(row) for row in rows)
            else {}
        )
        self.new_faults: list[Fault] = []
        self.changed_faults: dict[int, Fault] = {}
        self.changed_boxes: dict[int, BoxStatus] = {}
        self.changed_connectors: dict[int, ConnectorStatus] = {}

    def apply(self, row: Notification) -> None:
        at = row.occurred_at or row.received_at
        status = _status(row)
        if row.box is not None:
            self._heard_from_box(row)
        if status:
            self._set_status(row, status, at)
        effect = self.rules.effect(
            fault_type=row.fault_type,
            code=row.code,
            action=row.action,
            status=status,
            cleared=row.extra.get("cleared") is True,
        )
        key = _key(row.station_id, row.box_id, row.connector_id, row.fault_type, row.code)
        if effect == EventRule.Effect.CLEAR:
            fault = self.faults.get(key)
            # A clearing report older than the fault's latest firing is stale: the
            # fault fired again after it, so it stays open.
            if fault is not None and at >= fault.last_seen:
                self._resolve(fault, f"event:{row.message_id}", at)
        elif effect == EventRule.Effect.FAULT:
            self._fire(key, row, at)

    def _heard_from_box(self, row: Notification) -> None:
        live = self.boxes.get(row.box_id)
        if live is None:
            live = self.boxes[row.box_id] = BoxStatus(box=row.box)
        if live.last_seen is None or row.received_at > live.last_seen:
            live.last_seen = row.received_at  # lastSeen alone is not pushed
        self.changed_boxes[row.box_id] = live
        offline = self.faults.get(_key(row.station_id, row.box_id, None, OFFLINE, ""))
        if offline is not None:
            self._resolve(offline, "system", row.received_at)

    def _set_status(self, row: Notification, status: str, at) -> None:
        if row.connector is not None:
            live = self.connectors.get(row.connector_id)
            if live is None:
                live = self.connectors[row.connector_id] = ConnectorStatus(connector=row.connector)
                live.status, live.since = "", None
            if not _newer_status(live, status, at):
                return
            live.status, live.since = status, at
            self.changed_connectors[row.connector_id] = live
            data = connector_status_data(row.station, row.box, row.connector, live)
        elif row.box is not None:
            live = self.boxes[row.box_id]  # _heard_from_box made it
            if not _newer_status(live, status, at):
                return
            live.status, live.since = status, at
            data = box_status_data(row.station, row.box, live)
        else:
            return  # a station-wide event has no status to set
        self.changes.append(Change(row.station, LogEntry.Kind.STATUS.value, data))

    def _fire(self, key, row: Notification, at) -> None:
        explicit = row.extra.get("severity")
        explicit = explicit if explicit in _SEVERITIES else None
        fault = self.faults.get(key)
        if fault is None:
            fault = Fault(
                station=row.station,
                box=row.box,
                connector=row.connector,
                fault_type=row.fault_type,
                code=row.code,
                severity=explicit or self.rules.severity(row.fault_type, row.code),
                state=Fault.State.OPEN,
                occurrences=1,
                first_seen=at,
                last_seen=at,
            )
            self.faults[key] = fault
            self.new_faults.append(fault)
        else:
            fault.occurrences += 1
            fault.last_seen = max(fault.last_seen, at)
            fault.first_seen = min(fault.first_seen, at)
            if explicit:
                fault.severity = explicit
            self._changed(fault)
        self._record(fault)

    def _resolve(self, fault: Fault, by: str, at) -> None:
        fault.state = Fault.State.RESOLVED
        fault.resolved_by = by
        fault.resolved_at = at
        del self.faults[_key(fault.station_id, fault.box_id, fault.connector_id,
                             fault.fault_type, fault.code)]  # fmt: skip
        self._changed(fault)
        self._record(fault)

    def _changed(self, fault: Fault) -> None:
        if fault.pk is not None:
            self.changed_faults[fault.pk] = fault

    def _record(self, fault: Fault) -> None:
        self.changes.append(
            Change(fault.station, LogEntry.Kind.FAULT.value, fault_data(fault), fault)
        )

    def save(self) -> list[Change]:
        # Updates first: a fault resolved and fired again in one group frees its key
        # (the unique index on unresolved keys) before its successor is inserted.
        if self.changed_faults:
            Fault.objects.bulk_update(self.changed_faults.values(), _FAULT_FIELDS)
        if self.new_faults:
            Fault.objects.bulk_create(self.new_faults)
        if self.changed_boxes:
            BoxStatus.objects.bulk_create(
                self.changed_boxes.values(),
                update_conflicts=True,
                unique_fields=["box"],
                update_fields=["status", "since", "last_seen"],
            )
        if self.changed_connectors:
            ConnectorStatus.objects.bulk_create(
                self.changed_connectors.values(),
                update_conflicts=True,
                unique_fields=["connector"],
                update_fields=["status", "since"],
            )
        for change in self.changes:
            if change.fault is not None and change.data["id"] is None:
                change.data["id"] = str(change.fault.pk)
        return self.changes


def _status(row: Notification) -> str:
    status = row.extra.get("status")
    return status if status in STATUSES else ""


def _newer_status(live, status: str, at) -> bool:
    """A report changes the status unless it is older than the current one (device
    clocks and retries deliver out of order) or says the same."""
    if live.since is not None and at < live.since:
        return False
    return live.status != status


def _unresolved_faults(rows: list[Notification]) -> dict[tuple, Fault]:
    """The unresolved faults these events may touch, by key: narrowed by station and
    fault type (the unique index on unresolved keys serves it), matched exactly here."""
    station_ids = {row.station_id for row in rows}
    types = {row.fault_type for row in rows}
    if any(row.box_id is not None for row in rows):
        types.add(OFFLINE)
    stations = {row.station_id: row.station for row in rows}
    found = {}
    for fault in (
        Fault.objects.filter(station_id__in=station_ids, fault_type__in=types)
        .exclude(state=Fault.State.RESOLVED)
        .select_related("box", "connector")
        .order_by()
    ):
        fault.station = stations[fault.station_id]
        found[_key(fault.station_id, fault.box_id, fault.connector_id,
                   fault.fault_type, fault.code)] = fault  # fmt: skip
    return found
