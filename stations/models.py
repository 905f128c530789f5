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
    # Position of this station's notification log: the last sequence number handed out.
    # Sequences are contiguous per station (1, 2, 3, ...), allocated under this row's
    # lock, so a stream cursor "ST001:42" means "everything up to 42 was seen".
    log_seq = models.BigIntegerField(default=0, editable=False)
    # Notifications up to this sequence number were pruned; older cursors get a reset.
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
