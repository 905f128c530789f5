"""Faults and live status from newly stored notifications, on the one ingest path.

Pure: given the new notifications (in order) and the current state of what they may
touch (CurrentState: their keys' unresolved faults, their boxes' and connectors'
statuses), it works out every change by the admin's rules (faults/rules.py,
docs/FAULTS.md). Reading that state and writing the result is faults/persist.py's, in
the ingest's transaction with the stations' rows locked (notifications/ingest/), so a
crash leaves all of it or none.

The changes come out in log order: for each event its status change, then its fault
change; the ingest numbers them after the group's notifications.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

from faults.models import EventRule, Fault, Severity
from faults.rules import Rules
from faults.wire import box_status_data, connector_status_data, fault_data
from notifications.models import LogEntry, Notification
from stations.models import STATUSES, BoxStatus, ConnectorStatus, Station

OFFLINE = "OFFLINE"  # the fault the silence runner opens for a box that went quiet
_SEVERITIES = frozenset(Severity.values)


def fault_key(station_id, box_id, connector_id, fault_type, code) -> tuple:
    return (station_id, box_id, connector_id, fault_type, code)


def key_of(fault: Fault) -> tuple:
    return fault_key(fault.station_id, fault.box_id, fault.connector_id, fault.fault_type,
                     fault.code)  # fmt: skip


@dataclass
class Change:
    """One entry for the station's log: a status or fault change, its data as it was."""

    station: Station
    kind: str
    data: dict | None  # None: a raise whose data is rendered when the group ends
    fault: Fault | None = None  # a new fault gets its id in the data once inserted


@dataclass
class CurrentState:
    """What the events may touch, as stored: unresolved faults by key, statuses by id."""

    faults: dict[tuple, Fault]
    boxes: dict[int, BoxStatus]
    connectors: dict[int, ConnectorStatus]


@dataclass
class Derived:
    changes: list[Change] = field(default_factory=list)
    new_faults: list[Fault] = field(default_factory=list)
    changed_faults: dict[int, Fault] = field(default_factory=dict)
    changed_boxes: dict[int, BoxStatus] = field(default_factory=dict)  # status changed
    # Every box heard from, with its latest receive time: only lastSeen moves, written
    # without being read first (the write keeps the later of the two).
    heard_boxes: dict[int, object] = field(default_factory=dict)
    changed_connectors: dict[int, ConnectorStatus] = field(default_factory=dict)

    def boxes_only_heard(self):
        """(box, last seen) of the boxes heard from whose status did not change: only
        their lastSeen is written (the others are written whole)."""
        return (
            (box_id, at)
            for box_id, at in self.heard_boxes.items()
            if box_id not in self.changed_boxes
        )

    def fill_new_fault_ids(self) -> None:
        """Once the new faults are inserted: their ids into the changes' data."""
        for change in self.changes:
            if change.fault is not None and change.data["id"] is None:
                change.data["id"] = str(change.fault.pk)


class Classified(NamedTuple):
    """What an event does by the rules: all of it that does not depend on what is
    stored. Worked out ahead on the request's thread (notifications/ingest/rows.py), so
    the part of the derivation that other writers wait for (the stations are locked
    while it runs) is only the part that needs the stored state. (A named tuple: built
    for every event, in 0.7 µs where a frozen dataclass took 1.2.)"""

    key: tuple  # its fault's key
    effect: str  # EventRule.Effect
    status: str  # the status it reports, "" for none
    severity: str | None  # the severity it carries itself


def classify(row: Notification, rules: Rules) -> Classified:
    status = _status(row)
    severity = row.extra.get("severity")
    return Classified(
        key=fault_key(row.station_id, row.box_id, row.connector_id, row.fault_type, row.code),
        effect=rules.effect(
            fault_type=row.fault_type,
            code=row.code,
            action=row.action,
            status=status,
            cleared=row.extra.get("cleared") is True,
        ),
        status=status,
        severity=severity if severity in _SEVERITIES else None,
    )


@dataclass(frozen=True)
class Wanted:
    """What to read for a group of events (a superset: known ids included)."""

    station_ids: set[int]
    fault_types: set[str]
    box_ids: set[int]  # only those whose status an event sets
    connector_ids: set[int]  # only those whose status an event sets


def wanted_for(events) -> Wanted:
    """For prepared events (notifications/ingest/rows.py: each with its row and its
    Classified)."""
    rows = [event.row for event in events]
    any_box = any(row.box_id is not None for row in rows)
    reporting = [event.row for event in events if event.classified.status]
    return Wanted(
        station_ids={row.station_id for row in rows},
        fault_types={row.fault_type for row in rows} | ({OFFLINE} if any_box else set()),
        box_ids={
            row.box_id for row in reporting if row.box_id is not None and row.connector_id is None
        },  # fmt: skip
        connector_ids={row.connector_id for row in reporting if row.connector_id is not None},
    )


def derive(events, state: CurrentState, rules: Rules) -> Derived:
    """`events`: the group's new events in log order, prepared (each with its row,
    stamped with its receive time, and its Classified)."""
    derivation = _Derivation(state, rules)
    apply = derivation.apply
    for event in events:
        apply(event.row, event.classified)
    return derivation.finish()


# The effects as plain strings: compared for every event, with the stations locked.
_CLEAR = EventRule.Effect.CLEAR.value
_FAULT = EventRule.Effect.FAULT.value


class _Derivation:
    def __init__(self, state: CurrentState, rules: Rules):
        self.rules = rules
        self.faults = state.faults
        self.boxes = state.boxes
        self.connectors = state.connectors
        self.result = Derived()
        self.changes = self.result.changes
        self.new_faults = self.result.new_faults
        self.changed_faults = self.result.changed_faults
        self.changed_boxes = self.result.changed_boxes
        self.changed_connectors = self.result.changed_connectors
        # Raises of one fault in one transaction are one change, with the count at
        # commit: a batch or a group commit repeating a fault 50 times pushes one frame
        # (and writes one log row), not 50. Opening, acknowledging and resolving are
        # always changes of their own.
        self._pending_raise: dict[int, Change] = {}
        self._attached: set[int] = set()

    def finish(self) -> Derived:
        for change in self._pending_raise.values():
            change.data = fault_data(change.fault)
        self._pending_raise.clear()
        return self.result

    def apply(self, row: Notification, classified: Classified) -> None:
        at = _event_time(row)
        if row.box_id is not None:
            self._heard_from_box(row)
        key, effect, status, severity = classified
        if status:
            self._set_status(row, status, at)
        if effect == _FAULT:
            self._fire(key, row, at, severity)
        elif effect == _CLEAR:
            fault = self.faults.get(key)
            # A clearing report older than the fault's latest firing is stale: the
            # fault fired again after it, so it stays open.
            if fault is not None and at >= fault.last_seen:
                self._attach(fault, row)
                self._resolve(fault, f"event:{row.message_id}", at)

    def _heard_from_box(self, row: Notification) -> None:
        heard = self.result.heard_boxes
        if row.box_id not in heard or row.received_at > heard[row.box_id]:
            heard[row.box_id] = row.received_at  # lastSeen alone is not pushed
        offline = self.faults.get(fault_key(row.station_id, row.box_id, None, OFFLINE, ""))
        if offline is not None:
            self._attach(offline, row)
            self._resolve(offline, "system", row.received_at)

    def _set_status(self, row: Notification, status: str, at) -> None:
        if row.connector_id is not None:
            live = self.connectors.get(row.connector_id)
            if live is None:
                live = self.connectors[row.connector_id] = ConnectorStatus(connector=row.connector)
                live.status, live.since = "", None
            if not _newer_status(live, status, at):
                return
            live.status, live.since = status, at
            self.changed_connectors[row.connector_id] = live
            data = connector_status_data(row.station, row.box, row.connector, live)
        elif row.box_id is not None:
            live = self.boxes.get(row.box_id)
            if live is None:
                live = self.boxes[row.box_id] = BoxStatus(box=row.box, status="")
            if not _newer_status(live, status, at):
                return
            live.status, live.since = status, at
            live.last_seen = self.result.heard_boxes[row.box_id]
            self.changed_boxes[row.box_id] = live
            data = box_status_data(row.station, row.box, live)
        else:
            return  # a station-wide event has no status to set
        self.changes.append(Change(row.station, LogEntry.Kind.STATUS.value, data))

    def _fire(self, key, row: Notification, at, explicit: str | None) -> None:
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
            self._attach(fault, row)
            fault.occurrences += 1
            # (Comparisons rather than max() and min(): the same answer, ties included,
            # without two calls for every raise.)
            if at > fault.last_seen:
                fault.last_seen = at
            if at < fault.first_seen:
                fault.first_seen = at
            if explicit:
                fault.severity = explicit
            self._changed(fault)
            self._record_raise(fault)
            return
        self._record(fault)

    def _attach(self, fault: Fault, row: Notification) -> None:
        """The event's equipment rows onto a stored fault of its key (or its box's
        OFFLINE fault), so that rendering it never queries. Once per fault."""
        if id(fault) in self._attached:
            return
        self._attached.add(id(fault))
        fault.station = row.station
        if fault.box_id is not None:
            fault.box = row.box
        if fault.connector_id is not None:
            fault.connector = row.connector

    def _resolve(self, fault: Fault, by: str, at) -> None:
        self._settle_raise(fault)
        fault.state = Fault.State.RESOLVED
        fault.resolved_by = by
        fault.resolved_at = at
        del self.faults[key_of(fault)]
        self._changed(fault)
        self._record(fault)

    def _changed(self, fault: Fault) -> None:
        if fault.id is not None:
            self.changed_faults[fault.id] = fault

    def _record_raise(self, fault: Fault) -> None:
        if id(fault) in self._pending_raise:
            return  # folded into the raise already pending (rendered as it ends)
        change = Change(fault.station, LogEntry.Kind.FAULT.value, None, fault)
        self._pending_raise[id(fault)] = change
        self.changes.append(change)

    def _settle_raise(self, fault: Fault) -> None:
        """Before another change to the fault: its pending raise, as it stands now."""
        pending = self._pending_raise.pop(id(fault), None)
        if pending is not None:
            pending.data = fault_data(fault)

    def _record(self, fault: Fault) -> None:
        self.changes.append(
            Change(fault.station, LogEntry.Kind.FAULT.value, fault_data(fault), fault)
        )


def _event_time(row: Notification):
    """The device's time, else the receive time. A device clock ahead of ours counts as
    now: a report stamped in the future would otherwise outrank every real one, freezing
    a status and leaving a fault no clearing report could resolve."""
    occurred = row.occurred_at
    if occurred is None or occurred > row.received_at:
        return row.received_at
    return occurred


def _status(event) -> str:
    status = event.extra.get("status")
    return status if status in STATUSES else ""


def _newer_status(live, status: str, at) -> bool:
    """A report changes the status unless it is older than the current one (device
    clocks and retries deliver out of order) or says the same."""
    if live.since is not None and at < live.since:
        return False
    return live.status != status
