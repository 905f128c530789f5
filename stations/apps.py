from django.apps import AppConfig


class StationsConfig(AppConfig):
    name = "stations"
    verbose_name = "Stations"

    def ready(self):
        from stations import lookup  # noqa: F401 (connects the cache invalidation)
