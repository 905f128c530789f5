"""The notification log: every accepted event, in per-station sequence order."""

from django.db import models
from django.utils import timezone

from stations.models import Box, Connector, Station


class Notification(models.Model):
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="notifications")
    box = models.ForeignKey(
        Box, on_delete=models.PROTECT, null=True, blank=True, related_name="notifications"
    )
    connector = models.ForeignKey(
        Connector, on_delete=models.PROTECT, null=True, blank=True, related_name="notifications"
    )
    # Position in the station's log (LogEntry): increasing per station, not contiguous,
    # since fault and status changes take numbers of the same log.
    seq = models.BigIntegerField(editable=False)
    # The sender's id; unique, so a retried POST is stored and published once.
    message_id = models.CharField("message id", max_length=128, unique=True)
    fault_type = models.CharField(max_length=64)
    action = models.CharField(max_length=64)
    message = models.TextField(blank=True)
    code = models.CharField(max_length=64, blank=True)
    # The device's own time, when it sent one; receive time is ours and always set.
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    # Fields the sender added beyond the ones modelled above, kept for the dashboard.
    extra = models.JSONField(default=dict, blank=True)
    # The event object exactly as posted, for the admin's detail page.
    payload = models.JSONField()

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            # Replay: WHERE station = ? AND seq > ? ORDER BY seq.
            models.UniqueConstraint(fields=["station", "seq"], name="notification_seq_per_station"),
        ]
        indexes = [
            # Admin and history API: newest first, date hierarchy.
            models.Index(fields=["-received_at", "-id"], name="notification_newest"),
            # Admin list filters by fault type and action (their DISTINCT value lists).
            models.Index(fields=["fault_type"], name="notification_fault_type"),
            models.Index(fields=["action"], name="notification_action"),
        ]

    def __str__(self):
        return f"{self.message_id} ({self.station_id}:{self.seq})"


class LogEntry(models.Model):
    """One row of a station's log: everything its stream carries, in `seq` order.

    A notification, a fault change or a status change is written here in the same
    transaction as the change itself, with the station's next number (Station.log_seq,
    allocated under the station row's lock), and published after commit. Resume
    (Last-Event-ID), Pushpin's recovery and the snapshot's cursor all read this table.
    """

    class Kind(models.TextChoices):
        # The SSE event names.
        NOTIFICATION = "notification"
        FAULT = "fault"
        STATUS = "status"

    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="log")
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # A notification's frame is rendered from its row (no second copy of the event)...
    notification = models.OneToOneField(
        Notification, on_delete=models.CASCADE, null=True, blank=True, related_name="log_entry"
    )
    # ...a fault's or status's frame is its data line exactly as published at that
    # change (JSON text: replayed as it is, never parsed or re-encoded on the way).
    data = models.TextField(null=True, blank=True)  # noqa: DJ001 (null: a notification's entry has none)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["station", "seq"]
        verbose_name_plural = "log entries"
        constraints = [
            models.UniqueConstraint(fields=["station", "seq"], name="log_seq_per_station"),
        ]

    def __str__(self):
        return f"{self.station_id}:{self.seq} {self.kind}"
