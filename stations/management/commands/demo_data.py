"""Create demo stations ST001..STnnn, each with two boxes of two connectors; idempotent."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from stations.models import Box, Connector, Station


def station_code(number: int) -> str:
    # Three digits, more past 999 (ST1000): a code never changes with --stations.
    return f"ST{number:03d}"


class Command(BaseCommand):
    help = "Create demo stations (ST001...), boxes (<station>-B1, -B2) and connectors (1, 2)."

    def add_arguments(self, parser):
        parser.add_argument("--stations", type=int, default=3, help="how many stations")

    def handle(self, *args, stations: int, **options):
        if stations < 0:
            raise CommandError("--stations must be 0 or more")
        created = 0
        with transaction.atomic():
            existing = set(Station.objects.values_list("code", flat=True))
            for number in range(1, stations + 1):
                code = station_code(number)
                if code in existing:
                    continue
                station = Station.objects.create(code=code, name=f"Demo depot {number}")
                for box_number in (1, 2):
                    box = Box.objects.create(station=station, code=f"{code}-B{box_number}")
                    Connector.objects.bulk_create(
                        [Connector(box=box, code="1"), Connector(box=box, code="2")]
                    )
                created += 1
        self.stdout.write(
            f"demo_data: {created} stations created, {stations - created} already there"
        )
