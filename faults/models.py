"""Faults: what is broken now, since when, how often, and who is on it.

Every notification belongs to the fault of its key (station, box, connector, faultType,
code). The rules that decide what an event does to its fault (EventRule) and how severe
a new fault is (SeverityRule) are rows the admin edits; faults/rules.py reads them and
faults/derive.py applies them on the ingest path. docs/FAULTS.md has the whole story.
"""

from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce

from stations.models import STATUS_CHOICES, Box, Connector, Station


class Severity(models.TextChoices):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


# Most severe first: lists sort by this.
SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.ERROR: 1, Severity.WARNING: 2, Severity.INFO: 3}


class Fault(models.Model):
    class State(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="faults")
    box = models.ForeignKey(
        Box, on_delete=models.PROTECT, null=True, blank=True, related_name="faults"
    )
    connector = models.ForeignKey(
        Connector, on_delete=models.PROTECT, null=True, blank=True, related_name="faults"
    )
    fault_type = models.CharField(max_length=64)
    code = models.CharField(max_length=64, blank=True)  # "" when the events carry none
    severity = models.CharField(max_length=8, choices=Severity.choices)
    state = models.CharField(max_length=12, choices=State.choices, default=State.OPEN)
    occurrences = models.PositiveIntegerField(default=1)
    # Device time of the events (receive time when they carry none).
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    # "*_by" reads as in the API: a username, "key:<name>", "event:<message id>" or "system".
    acknowledged_by = models.CharField(max_length=200, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-last_seen", "-id"]
        constraints = [
            # One unresolved fault per key, held by the database: two ingests racing on
            # one key cannot both open one. Absent box/connector count as one value
            # (NULLs would otherwise never collide).
            models.UniqueConstraint(
                F("station"),
                Coalesce("box", Value(0)),
                Coalesce("connector", Value(0)),
                F("fault_type"),
                F("code"),
                condition=~Q(state="resolved"),
                name="one_unresolved_fault_per_key",
            ),
        ]
        # No index on last_seen, although the admin lists (and dates) faults by it:
        # every raise moves it, and an indexed column that changes makes each raise a
        # non-HOT update (PostgreSQL writes a new entry into every index of the table).
        # The ingest raises faults with the stations locked, so that cost was paid by
        # every other writer too: the group's write statement took 4.9 ms for 100
        # raises with the index, 2.9 without (docs/PERFORMANCE.md, fifth session). The price:
        # the admin's fault list sorts the whole table (one row per fault's life, not
        # per event) for each page; the console and the API read unresolved faults or
        # one fault by id, and never sort the table.

    def __str__(self):
        where = "/".join(
            part
            for part in (self.box and self.box.code, self.connector and self.connector.code)
            if part
        )
        return f"{self.fault_type} {self.code} at {self.station_id} {where}".strip()

    @property
    def is_resolved(self) -> bool:
        return self.state == self.State.RESOLVED


class FaultAction(models.Model):
    """The audit trail of a fault: who did what to it, when, and from where."""

    class Action(models.TextChoices):
        OPENED = "opened"
        ACKNOWLEDGED = "acknowledged"
        UNACKNOWLEDGED = "unacknowledged"
        RESOLVED = "resolved"
        NOTE = "note"

    fault = models.ForeignKey(Fault, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.CharField(max_length=200)
    at = models.DateTimeField()
    # For people and keys: the client address and user agent of the request.
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.action} by {self.actor}"


class EventRule(models.Model):
    """What an event does to the fault of its key. The first enabled rule that matches
    (lowest position) decides; an event no rule matches opens or raises its fault.
    Blank match fields match anything. Fault types compare without case, "_" or "-"
    (NO_ERROR, NoError and no-error are one type)."""

    class Effect(models.TextChoices):
        CLEAR = "clear", "clear: resolves the open fault of its key, opens nothing"
        NOTICE = "notice", "notice: opens nothing, touches no fault"
        FAULT = "fault", "fault: opens the fault of its key, or raises the open one"

    position = models.PositiveIntegerField(default=100)
    enabled = models.BooleanField(default=True)
    fault_type = models.CharField(max_length=64, blank=True)
    code = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, blank=True)
    cleared = models.BooleanField(
        default=False, help_text='Match only events that carry "cleared": true.'
    )
    effect = models.CharField(max_length=8, choices=Effect.choices)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self):
        return self.description or f"rule {self.position}: {self.effect}"


class SeverityRule(models.Model):
    """The severity of a new fault by faultType, and optionally code (which wins). An
    event's own "severity" field wins over both; unmapped types are "error"."""

    fault_type = models.CharField(max_length=64)
    code = models.CharField(max_length=64, blank=True, help_text="Blank: any code.")
    severity = models.CharField(max_length=8, choices=Severity.choices)

    class Meta:
        ordering = ["fault_type", "code"]
        constraints = [
            models.UniqueConstraint(
                fields=["fault_type", "code"], name="one_severity_per_type_code"
            )
        ]

    def __str__(self):
        return f"{self.fault_type}{'/' + self.code if self.code else ''} → {self.severity}"
