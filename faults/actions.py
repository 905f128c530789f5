"""An operator's actions on a fault: acknowledge, unacknowledge, resolve, with a note.

Each action is one transaction: the station's row is locked first (the order the
ingest takes its locks in, so the two never deadlock), the fault re-read under it,
changed, recorded in its audit trail (FaultAction: who, when, from where) and in the
station's log, and published on commit to everyone watching the station.
"""

from contextlib import nullcontext
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from faults.derive import Change
from faults.models import Fault, FaultAction
from faults.wire import fault_data
from notifications.ingest.write_lock import write_lock
from notifications.log import append_changes
from notifications.models import LogEntry
from notifications.push.publish import publish_frames
from notifications.push.pushpin_relay import announce
from stations.models import Station


class FaultResolvedError(Exception):
    """Any action on a resolved fault: 409."""


@dataclass(frozen=True)
class Actor:
    """Who acts, as the fault records it ("alice", "key:console"), and from where."""

    name: str
    remote_addr: str | None = None
    user_agent: str = ""


def act_on_fault(fault_id: int, action: str, actor: Actor, note: str | None = None) -> Fault:
    """Apply `action` (a FaultAction.Action: acknowledged, unacknowledged, resolved).
    A note, if given, replaces the fault's note. Repeating an acknowledge or an
    unacknowledge (without a new note) changes nothing and records nothing."""
    station_id = Fault.objects.values_list("station_id", flat=True).get(pk=fault_id)
    sqlite = connection.vendor == "sqlite"
    with write_lock() if sqlite else nullcontext(), transaction.atomic():
        station = Station.objects.select_for_update().get(pk=station_id)
        fault = Fault.objects.select_related("box", "connector").get(pk=fault_id)
        fault.station = station
        if fault.is_resolved:
            raise FaultResolvedError
        now = timezone.now()
        state_changed = _apply(fault, action, actor, now)
        note_changed = note is not None and note != fault.note
        if note_changed:
            fault.note = note
        if not (state_changed or note_changed):
            return fault
        fault.save()
        FaultAction.objects.create(
            fault=fault,
            action=action if state_changed else FaultAction.Action.NOTE,
            actor=actor.name,
            at=now,
            remote_addr=actor.remote_addr,
            user_agent=actor.user_agent[:300],
            note=note or "",
        )
        frames = append_changes([Change(station, LogEntry.Kind.FAULT.value, fault_data(fault))])
        announce([(station, frames[0].id)], {station.pk: frames[-1].id})
        transaction.on_commit(lambda: publish_frames(frames), robust=True)
    return fault


def _apply(fault: Fault, action: str, actor: Actor, now) -> bool:
    if action == FaultAction.Action.ACKNOWLEDGED:
        if fault.state == Fault.State.ACKNOWLEDGED:
            return False
        fault.state = Fault.State.ACKNOWLEDGED
        fault.acknowledged_by, fault.acknowledged_at = actor.name, now
    elif action == FaultAction.Action.UNACKNOWLEDGED:
        if fault.state == Fault.State.OPEN:
            return False
        fault.state = Fault.State.OPEN
        fault.acknowledged_by, fault.acknowledged_at = "", None
    elif action == FaultAction.Action.RESOLVED:
        fault.state = Fault.State.RESOLVED
        fault.resolved_by, fault.resolved_at = actor.name, now
    else:
        raise ValueError(f"unknown action {action!r}")
    return True
