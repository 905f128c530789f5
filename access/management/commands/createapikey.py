"""Create an API key and print it, alone, on stdout. It is shown this once only."""

from django.core.management.base import BaseCommand, CommandError

from access.models import ApiKey
from stations.models import Station


class Command(BaseCommand):
    help = "Create an API key (ingest or subscribe), optionally limited to stations."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--scope", required=True, choices=ApiKey.Scope.values)
        parser.add_argument(
            "--station",
            action="append",
            default=[],
            metavar="CODE",
            help="limit the key to this station (repeat for more); without it: every station",
        )
        parser.add_argument(
            "--signed", action="store_true", help="require HMAC-signed requests (webhooks)"
        )

    def handle(self, *args, name, scope, station, signed, **options):
        codes = list(dict.fromkeys(station))
        stations = list(Station.objects.filter(code__in=codes))
        unknown = sorted(set(codes) - {s.code for s in stations})
        if unknown:
            raise CommandError(f"Unknown station(s): {', '.join(unknown)}")
        _, key = ApiKey.issue(
            name=name,
            scope=scope,
            stations=stations,
            all_stations=not codes,
            require_signature=signed,
        )
        # The key alone, so scripts can capture it: KEY=$(manage.py createapikey ...)
        self.stdout.write(key)
