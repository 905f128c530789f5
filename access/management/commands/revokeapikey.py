"""Revoke an API key by its prefix (the part after "cgm_", as the admin lists it)."""

from django.core.management.base import BaseCommand, CommandError

from access.models import ApiKey


class Command(BaseCommand):
    help = "Revoke an API key; requests with it get 401, its open streams end within seconds."

    def add_arguments(self, parser):
        parser.add_argument("key_or_prefix", help="the key itself, or its prefix")

    def handle(self, *args, key_or_prefix, **options):
        parts = key_or_prefix.split("_")
        prefix = parts[1] if len(parts) >= 3 else key_or_prefix
        api_key = ApiKey.objects.filter(prefix=prefix).first()
        if api_key is None:
            raise CommandError(f"No API key with prefix {prefix!r}.")
        if api_key.revoked_at is None:
            api_key.revoke()
        self.stdout.write(f"revoked: {api_key}")
