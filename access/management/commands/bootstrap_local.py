"""Local mode only: a demo admin and a demo ingest key, printed once (make run)."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from access.models import ApiKey

DEMO_USER = "admin"
DEMO_KEY_NAME = "local demo ingest key"


class Command(BaseCommand):
    help = "Create the local demo admin and ingest key (refused unless DEBUG is on)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--port",
            type=int,
            default=8000,
            help="the port `make run` serves on, for the printed curl example (default 8000)",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("bootstrap_local is for local mode (DEBUG=1) only.")
        User = get_user_model()  # noqa: N806
        if User.objects.filter(username=DEMO_USER).exists():
            self.stdout.write(
                f"Local demo admin {DEMO_USER!r} exists (password shown at its creation; "
                f"reset it with: .venv/bin/python manage.py changepassword {DEMO_USER}). "
                "New keys: .venv/bin/python manage.py createapikey NAME --scope ingest"
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(DEMO_USER, "", password)
        _, key = ApiKey.issue(name=DEMO_KEY_NAME, scope=ApiKey.Scope.INGEST, all_stations=True)
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "=" * 72,
                    "LOCAL-ONLY demo credentials (shown once; for this machine only):",
                    f"  dashboard and admin login:  {DEMO_USER} / {password}",
                    f"  ingest API key:             {key}",
                    f"  try:  curl -X POST http://127.0.0.1:{options['port']}/api/event \\",
                    f"          -H 'Authorization: Bearer {key}' \\",
                    "          -H 'Content-Type: application/json' \\",
                    '          -d \'{"id": "evt-1", "stationId": "ST001", '
                    '"faultType": "SYSTEM_ERROR", "action": "GENERAL"}\'',
                    "=" * 72,
                    "",
                ]
            )
        )
