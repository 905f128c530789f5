"""The notification log: every accepted event, in per-station sequence order."""

from django.db import models
from django.utils import timezone

from stations.models import Box, Connector, Station


class Notification(models.Model):
    # Every index is written by every ingest, with the stations' rows locked: none that
    # another serves already. Lookups by station use notification_seq_per_station
    # (station first); message_id's unique index serves its lookups, and as a
    # constraint (below) it comes without the LIKE index a unique CharField gets on
    # PostgreSQL (nothing here searches message ids by prefix).
    station = models.ForeignKey(
        Station, on_delete=models.PROTECT, related_name="notifications", db_index=False
    )
    box = models.ForeignKey(
        Box, on_delete=models.PROTECT, null=True, blank=True, related_name="notifications"
    )
    connector = models.ForeignKey(
        Connector, on_delete=models.PROTECT, null=True, blank=True, related_name="notifications"
    )
    # Position in the station's log: a notification is an entry of it, numbered from
    # the station's counter (Station.log_seq) like its fault and status changes
    # (LogEntry), so notifications' numbers increase but are not contiguous.
    seq = models.BigIntegerField(editable=False)
    # The sender's id; unique (notification_message_id), so a retried POST is stored and
    # published once.
    message_id = models.CharField("message id", max_length=128)
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
            models.UniqueConstraint(fields=["message_id"], name="notification_message_id"),
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
    """A fault or status change in a station's log.

    A station's log is its notifications (each one entry, in Notification) and these,
    numbered from one counter (Station.log_seq, moved under the station row's lock):
    1, 2, 3… without a hole across both tables. Each is written in the transaction of
    its change and published after commit; resume (Last-Event-ID), Pushpin's recovery
    and the snapshot's cursor read the two in `seq` order (notifications/log.py).
    Notifications are not copied here: they are the largest part of the log, and a
    second row per event cost the batch ingest a third of its database time.
    """

    class Kind(models.TextChoices):
        # The SSE event names.
        FAULT = "fault"
        STATUS = "status"

    # Lookups by station use log_seq_per_station (station first): no index of its own.
    station = models.ForeignKey(
        Station, on_delete=models.CASCADE, related_name="log", db_index=False
    )
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The frame's data line exactly as published at that change (JSON text: replayed as
    # it is, never parsed or re-encoded on the way).
    data = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["station", "seq"]
        verbose_name_plural = "log entries"
        constraints = [
            models.UniqueConstraint(fields=["station", "seq"], name="log_seq_per_station"),
        ]

    def __str__(self):
        return f"{self.station_id}:{self.seq} {self.kind}"
