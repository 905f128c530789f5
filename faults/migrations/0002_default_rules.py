"""The default rules, as rows the admin edits (faults/defaults.py)."""

from django.db import migrations

from faults.defaults import install_default_rules


def add_defaults(apps, schema_editor):
    install_default_rules(apps.get_model("faults", "EventRule"), apps.get_model("faults", "SeverityRule"))


def remove_defaults(apps, schema_editor):
    apps.get_model("faults", "EventRule").objects.all().delete()
    apps.get_model("faults", "SeverityRule").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("faults", "0001_initial")]
    operations = [migrations.RunPython(add_defaults, remove_defaults)]
