"""Who may post and who may listen: API keys, station assignments, an access revision."""

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from stations.models import Station

KEY_PREFIX = "cgm"


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so a plain SHA-256 is enough (no password
    # stretching needed) and keeps the per-request check cheap.
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        INGEST = "ingest", "ingest (POST /api/event)"
        SUBSCRIBE = "subscribe", "subscribe (streams, history, state and faults: read)"
        OPERATE = "operate", "operate (reads as subscribe; acknowledges and resolves faults)"

    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=16, choices=Scope.choices)
    # The key's public part ("cgm_<prefix>_<secret>"): found by it, shown in the admin.
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    all_stations = models.BooleanField(
        default=False, help_text="Valid for every station, present and future."
    )
    stations = models.ManyToManyField(Station, blank=True, related_name="api_keys")
    require_signature = models.BooleanField(
        default=False,
        help_text="Requests must carry an HMAC signature (webhook senders).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.scope}, {KEY_PREFIX}_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(
        cls, *, name: str, scope: str, stations=(), all_stations=False, require_signature=False
    ) -> tuple["ApiKey", str]:
        """Create a key; returns the row and the key itself, which is never stored."""
        prefix = secrets.token_hex(4)
        key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        api_key = cls.objects.create(
            name=name,
            scope=scope,
            prefix=prefix,
            key_hash=hash_key(key),
            all_stations=all_stations,
            require_signature=require_signature,
        )
        api_key.stations.set(stations)
        return api_key, key

    def revoke(self):
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])


class StationAccess(models.Model):
    """A station an operator (a user, or every member of a group) may watch."""

    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="access")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="station_access",
    )
    group = models.ForeignKey(
        Group, on_delete=models.CASCADE, null=True, blank=True, related_name="station_access"
    )

    class Meta:
        verbose_name = "station assignment"
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
                name="station_access_user_xor_group",
            ),
            models.UniqueConstraint(fields=["station", "user"], name="station_access_user_once"),
            models.UniqueConstraint(fields=["station", "group"], name="station_access_group_once"),
        ]

    def __str__(self):
        return f"{self.user or self.group} → {self.station.code}"


class AccessRevision(models.Model):
    """One counter, bumped on every change that can take access away.

    Every server process polls it (one tiny query every few seconds) and re-checks its
    open streams when it moves: revocation reaches streams held by any worker, with
    no message bus needed.
    """

    value = models.BigIntegerField(default=0)

    def __str__(self):
        return f"access revision {self.value}"

    @classmethod
    def bump(cls):
        updated = cls.objects.filter(pk=1).update(value=F("value") + 1)
        if not updated:
            cls.objects.get_or_create(pk=1, defaults={"value": 1})

    @classmethod
    def current(cls) -> int:
        return cls.objects.filter(pk=1).values_list("value", flat=True).first() or 0


class StreamGrant(models.Model):
    """What a `?token=` stream URL stands for (access/tokens.py): its issuer, and the
    login session it was issued from, if any.

    The URL keeps opening (EventSource reconnects with it for hours) as long as the
    grant is live: not ended, younger than CGM_STREAM_TOKEN_SECONDS, its issuer still
    allowed the stations, and its session (when it came from one) not logged out.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE)
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.CASCADE)
    # The issuing login session; its logout ends the grant (access/signals.py).
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    issued_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False) ^ Q(api_key__isnull=False),
                name="stream_grant_one_issuer",
            )
        ]

    def __str__(self):
        return f"stream grant {self.pk} ({self.user_id or 'key ' + str(self.api_key_id)})"
