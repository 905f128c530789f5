"""The depot's equipment: stations hold boxes (charging piles), boxes hold connectors."""

from django.core.validators import RegexValidator
from django.db import models

# Codes travel in URLs, stream cursors ("ST001:42") and channel names, so they stay
# to characters that need no escaping anywhere.
code_validator = RegexValidator(r"^[A-Za-z0-9_.-]+$", "Use letters, digits, '-', '_' and '.' only.")


class Station(models.Model):
    code = models.CharField(max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Position of this station's log (notifications.LogEntry: notifications, fault and
    # status changes): the last sequence number handed out. Log entries are contiguous
    # per station (1, 2, 3, ...), allocated under this row's lock, so a stream cursor
    # "ST001:42" means "everything up to 42 was seen".
    log_seq = models.BigIntegerField(default=0, editable=False)
    # Log entries up to this sequence number were pruned; older cursors get a reset.
    log_pruned_through = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["code"]

    def __str__(self):
        return self.code if not self.name else f"{self.code} ({self.name})"


class Box(models.Model):
    """A charging pile (charge point)."""

    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="boxes")
    code = models.CharField(max_length=64, validators=[code_validator])
    name = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["station__code", "code"]
        verbose_name_plural = "boxes"
        constraints = [
            models.UniqueConstraint(fields=["station", "code"], name="box_code_unique_per_station")
        ]

    def __str__(self):
        return self.code


class Connector(models.Model):
    """A charging gun of a box."""

    box = models.ForeignKey(Box, on_delete=models.CASCADE, related_name="connectors")
    code = models.CharField(max_length=64, validators=[code_validator])

    class Meta:
        ordering = ["box__station__code", "box__code", "code"]
        constraints = [
            models.UniqueConstraint(fields=["box", "code"], name="connector_code_unique_per_box")
        ]

    def __str__(self):
        return f"{self.box.code}/{self.code}"


# Live status, kept apart from the equipment rows above: those are configuration (the
# admin edits them, the ingest caches them for seconds), these change with every report
# and are written only under the station's lock, by the ingest (faults/derive.py).

STATUS_CHOICES = [
    # OCPP 1.6 ChargePointStatus, OCPP 2.0.1's Occupied, and our own Offline.
    (value, value)
    for value in (
        "Available",
        "Preparing",
        "Charging",
        "SuspendedEVSE",
        "SuspendedEV",
        "Finishing",
        "Reserved",
        "Unavailable",
        "Faulted",
        "Occupied",
        "Offline",
    )
]
STATUSES = frozenset(value for value, _ in STATUS_CHOICES)


class BoxStatus(models.Model):
    """A box's last reported status and when it was last heard from."""

    box = models.OneToOneField(Box, on_delete=models.CASCADE, primary_key=True, related_name="live")
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, blank=True)
    # The device time the status took effect (receive time if it sent none): a report
    # older than this never replaces it.
    since = models.DateTimeField(null=True, blank=True)
    # Receive time of the box's latest event, whatever it said.
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "box statuses"

    def __str__(self):
        return f"{self.box_id}: {self.status or 'no status'}"


class ConnectorStatus(models.Model):
    connector = models.OneToOneField(
        Connector, on_delete=models.CASCADE, primary_key=True, related_name="live"
    )
    status = models.CharField(max_length=16, choices=STATUS_CHOICES)
    since = models.DateTimeField()

    class Meta:
        verbose_name_plural = "connector statuses"

    def __str__(self):
        return f"{self.connector_id}: {self.status}"
