"""Validation of posted events (the seed's camelCase JSON) into ingest-ready values."""

import re
import threading
from dataclasses import dataclass, field
from datetime import datetime

from rest_framework import serializers
from rest_framework.fields import SkipField, empty

from notifications.ingest.storable import extra_problems
from stations import lookup
from stations.models import STATUSES, Box, Connector, Station

# Optional fields that steer the fault and status of an event (faults/derive.py). They
# stay in `extra` as posted (the notification's shape does not change); here they are
# only checked, so a typo is a 400 naming the field rather than a silently ignored value.
SEVERITIES = ("critical", "error", "warning", "info")


def fault_field_problems(raw: dict) -> dict[str, list[str]]:
    problems = {}
    severity = raw.get("severity")
    if severity is not None and severity not in SEVERITIES:
        problems["severity"] = [f"Must be one of: {', '.join(SEVERITIES)}."]
    status = raw.get("status")
    if status is not None and status not in STATUSES:
        problems["status"] = [f"Must be one of: {', '.join(sorted(STATUSES))}."]
    cleared = raw.get("cleared")
    if cleared is not None and not isinstance(cleared, bool):
        problems["cleared"] = ["Must be true or false."]
    return problems


# Keys the model stores in columns; anything else a sender adds is kept in `extra`.
KNOWN_KEYS = {
    "id",
    "stationId",
    "boxId",
    "connectorId",
    "faultType",
    "action",
    "message",
    "code",
    "timestamp",
}


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField would quietly turn 42 into "42"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ConnectorIdField(serializers.CharField):
    """Connector ids are strings in the seed and integers in OCPP: accept both."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int):
            raise serializers.ValidationError("Must be a string or an integer.")
        return super().to_internal_value(str(data))


@dataclass
class EventInput:
    """One validated event, with its equipment resolved to rows."""

    message_id: str
    station: Station
    box: Box | None
    connector: Connector | None
    fault_type: str
    action: str
    message: str
    code: str
    occurred_at: datetime | None
    extra: dict
    payload: dict = field(repr=False)
    # Its Notification row and what it does by the rules (faults/derive.py Classified),
    # worked out ahead on the request's thread (ingest/rows.py prepare_rows).
    row: object = field(default=None, repr=False, compare=False)
    classified: object = field(default=None, repr=False, compare=False)


class Equipment:
    """The stations, boxes and connectors a request names (stations/lookup.py caches)."""

    def __init__(self, raw_events: list):
        def strings(key):
            return {
                e[key] for e in raw_events if isinstance(e, dict) and isinstance(e.get(key), str)
            }

        connector_codes = strings("connectorId") | {
            str(e["connectorId"])
            for e in raw_events
            if isinstance(e, dict) and type(e.get("connectorId")) is int
        }
        self.stations = lookup.stations_by_code(strings("stationId"))
        self.boxes = lookup.boxes_by_code(strings("boxId"))
        all_boxes = [box for boxes in self.boxes.values() for box in boxes]
        self.connectors = (
            lookup.connectors_by_box(all_boxes, connector_codes)
            if all_boxes and connector_codes
            else {}
        )


class EventSerializer(serializers.Serializer):
    id = StrictCharField(max_length=128)
    stationId = StrictCharField(max_length=64)  # noqa: N815 (the seed's field names)
    boxId = StrictCharField(max_length=64, required=False, allow_null=True)  # noqa: N815
    connectorId = ConnectorIdField(max_length=64, required=False, allow_null=True)  # noqa: N815
    faultType = StrictCharField(max_length=64)  # noqa: N815
    action = StrictCharField(max_length=64)
    message = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=4000)
    code = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=64)
    timestamp = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, attrs):
        return resolve_event(attrs, self.initial_data, self.context["equipment"])


# The serializer's fields, bound once per thread. DRF deep-copies every declared field
# each time a serializer is instantiated; per event, that copy was the largest single
# cost of the ingest. Field objects are not documented as thread-safe, so each ingest
# thread keeps its own set (a fixed pool: a handful of copies per process).
_thread_fields = threading.local()


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    """How _check_event treats one of the serializer's fields (a thread's own copy)."""

    name: str
    drf_field: serializers.Field
    # A CharField's max_length, for _plain_string (None: no limit, or not a CharField).
    string_max: int | None
    is_string: bool
    # Absent from the event, DRF skips it (SkipField): optional, without a default.
    skip_when_absent: bool


def _event_fields() -> tuple[_FieldPlan, ...]:
    plans = getattr(_thread_fields, "plans", None)
    if plans is None:
        plans = _thread_fields.plans = tuple(
            _FieldPlan(
                name,
                drf_field,
                getattr(drf_field, "max_length", None),
                isinstance(drf_field, serializers.CharField),
                not drf_field.required and drf_field.default is empty,
            )
            for name, drf_field in EventSerializer().fields.items()
        )
    return plans


def resolve_event(attrs: dict, payload: dict, equipment: Equipment) -> EventInput:
    """Checked field values + the equipment they name -> an EventInput, or a
    ValidationError naming the field."""
    station = equipment.stations.get(attrs["stationId"])
    if station is None:
        raise serializers.ValidationError(
            {"stationId": [f"Unknown station {attrs['stationId']!r}."]}
        )

    box = None
    box_code = attrs.get("boxId")
    if box_code is not None:
        candidates = equipment.boxes.get(box_code, [])
        box = next((b for b in candidates if b.station_id == station.pk), None)
        if box is None:
            message = (
                f"Box {box_code!r} does not belong to station {station.code!r}."
                if candidates
                else f"Unknown box {box_code!r}."
            )
            raise serializers.ValidationError({"boxId": [message]})

    connector = None
    connector_code = attrs.get("connectorId")
    if connector_code is not None:
        if box is None:
            raise serializers.ValidationError({"connectorId": ["A connectorId needs a boxId."]})
        connector = equipment.connectors.get((box.pk, connector_code))
        if connector is None:
            raise serializers.ValidationError(
                {"connectorId": [f"Unknown connector {connector_code!r} on box {box.code!r}."]}
            )

    return EventInput(
        message_id=attrs["id"],
        station=station,
        box=box,
        connector=connector,
        fault_type=attrs["faultType"],
        action=attrs["action"],
        message=attrs.get("message") or "",
        code=attrs.get("code") or "",
        occurred_at=attrs.get("timestamp"),
        extra={k: v for k, v in payload.items() if k not in KNOWN_KEYS},
        payload=payload,
    )


_SURROGATES = re.compile("[\ud800-\udfff]")


def _plain_string(value, max_length: int | None) -> bool:
    """True when a CharField would take `value` exactly as it is: a non-blank string
    with nothing to trim, within max_length, without the characters DRF refuses (NUL,
    surrogates). Then the field need not run; anything else goes to the field, for
    its exact answer or error message."""
    return (
        type(value) is str
        and value != ""
        and (max_length is None or len(value) <= max_length)
        and value == value.strip()
        and "\x00" not in value
        and (value.isascii() or _SURROGATES.search(value) is None)
    )


def _check_event(raw: dict, equipment: Equipment) -> tuple[EventInput | None, dict]:
    """What EventSerializer(data=raw).is_valid() does, with the shared fields:
    (event, {}) or (None, {field: [messages]})."""
    attrs, errors = {}, {}
    for plan in _event_fields():
        name = plan.name
        value = raw.get(name, empty)
        # The common cases, decided as the field would without running it (run, each
        # cost about a microsecond, an absent one most: DRF skips it by an exception).
        if value is empty and plan.skip_when_absent:
            continue
        if plan.is_string and _plain_string(value, plan.string_max):
            attrs[name] = value
            continue
        try:
            attrs[name] = plan.drf_field.run_validation(value)
        except SkipField:
            pass
        except serializers.ValidationError as exc:
            errors[name] = exc.detail
    errors.update(extra_problems({k: v for k, v in raw.items() if k not in KNOWN_KEYS}))
    errors.update(fault_field_problems(raw))
    if errors:
        return None, errors
    try:
        return resolve_event(attrs, raw, equipment), {}
    except serializers.ValidationError as exc:
        return None, exc.detail


def validate_events(
    raw_events: list, *, batch: bool
) -> tuple[list[EventInput], dict[str, list[str]]]:
    """Validate every event of a request; errors are keyed "field", or "[index].field"
    in a batch, so a sender can find the offending value."""
    equipment = Equipment(raw_events)
    inputs: list[EventInput] = []
    errors: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_events):
        prefix = f"[{index}]." if batch else ""
        if not isinstance(raw, dict):
            errors[f"[{index}]" if batch else "body"] = ["Expected a JSON object for each event."]
            continue
        event, event_errors = _check_event(raw, equipment)
        if event is None:
            for name, messages in event_errors.items():
                key = "" if name == "non_field_errors" else name
                errors[f"{prefix}{key}".rstrip(".") or "body"] = [str(m) for m in messages]
            continue
        if event.message_id in seen:
            errors[f"{prefix}id"] = [
                f"Duplicate id {event.message_id!r} (also at index {seen[event.message_id]})."
            ]
            continue
        seen[event.message_id] = index
        inputs.append(event)
    return inputs, errors
