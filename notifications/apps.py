from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self):
        from django.conf import settings
        from django_eventstream import views as eventstream_views

        import cgm.sqlite  # noqa: F401 (WAL for the SQLite default)

        # django-eventstream drops a listener's events past a hard-coded 10 per channel
        # (DESIGN.md trap 9). Our streams treat an overflow as "catch up from the log",
        # so nothing is lost either way; a larger queue just makes that rarer under bursts.
        eventstream_views.MAX_PENDING = settings.CGM_SSE_MAX_PENDING

        from notifications import listeners

        listeners.install()
