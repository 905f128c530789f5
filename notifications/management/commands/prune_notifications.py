from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from notifications.history.retention import notification_prune
from stations.models import Station


class Command(BaseCommand):
    help = (
        "Delete old notifications from the log. Streams resuming from a deleted position "
        "get an explicit stream-reset event."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than-days", type=int, help="delete entries older than N days")
        parser.add_argument("--station", help="only this station (code)")
        parser.add_argument("--through-seq", type=int, help="delete entries up to this sequence")

    def handle(self, *args, older_than_days, station, through_seq, **options):
        if older_than_days is None and through_seq is None:
            raise CommandError("Give --older-than-days and/or --through-seq.")
        if through_seq is not None and station is None:
            raise CommandError("--through-seq needs --station (sequences are per station).")
        target = None
        if station is not None:
            target = Station.objects.filter(code=station).first()
            if target is None:
                raise CommandError(f"Unknown station {station!r}.")
        before = (
            timezone.now() - timedelta(days=older_than_days)
            if older_than_days is not None
            else None
        )
        deleted = notification_prune(before=before, station=target, through_seq=through_seq)
        self.stdout.write(f"prune_notifications: {deleted} notifications deleted")
