"""The notification history in the Django admin: browse, filter, search, read."""

import json

from django.contrib import admin
from django.utils.html import format_html

from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = [
        "received_at",
        "message_id",
        "station",
        "box",
        "connector",
        "fault_type",
        "action",
        "short_message",
    ]
    list_filter = [
        ("station", admin.RelatedOnlyFieldListFilter),
        ("box", admin.RelatedOnlyFieldListFilter),
        "fault_type",
        "action",
        "received_at",
    ]
    # A leading "=" makes the id search exact (uses the unique index); the message
    # is searched by substring.
    search_fields = ["=message_id", "message"]
    date_hierarchy = "received_at"
    ordering = ["-received_at", "-id"]
    list_select_related = ["station", "box", "connector__box"]
    list_per_page = 100
    # No second count(*) over the whole table on every page.
    show_full_result_count = False
    readonly_fields = [
        "message_id",
        "station",
        "box",
        "connector",
        "seq",
        "fault_type",
        "action",
        "message",
        "code",
        "occurred_at",
        "received_at",
        "extra",
        "raw_payload",
    ]
    exclude = ["payload"]

    @admin.display(description="message")
    def short_message(self, obj):
        return obj.message if len(obj.message) <= 80 else obj.message[:77] + "..."

    @admin.display(description="raw payload")
    def raw_payload(self, obj):
        return format_html(
            "<pre style='white-space: pre-wrap'>{}</pre>",
            json.dumps(obj.payload, indent=2, ensure_ascii=False),
        )

    # The log is written by the ingest only: the admin reads it.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
