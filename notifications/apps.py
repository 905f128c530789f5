from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self):
        import cgm.sqlite  # noqa: F401 (WAL for the SQLite default)
