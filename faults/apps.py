from django.apps import AppConfig


class FaultsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "faults"
    verbose_name = "faults"
