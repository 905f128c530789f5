"""`manage.py pushpin_relay`: the process that publishes every committed log entry to
Pushpin, in each station's order (notifications/push/pushpin_relay.py). Run one beside
the Daphne workers when GRIP_URL is set (scripts/run_multi.py does); a second one, or
the workers' standbys, take over if it stops."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from notifications.push.pushpin_relay import Relay


class Command(BaseCommand):
    help = "Publish committed log entries to Pushpin (GRIP_URL), in each station's order."

    def handle(self, *args, **options):
        if not settings.GRIP_URLS:
            raise CommandError("GRIP_URL is not set: there is no Pushpin to publish to")
        if connection.vendor != "postgresql":
            raise CommandError(
                "the relay process needs PostgreSQL (LISTEN); on SQLite the server "
                "process publishes its own commits"
            )
        self.stdout.write("pushpin_relay: waiting for the relay's role, then publishing")
        Relay().run()
