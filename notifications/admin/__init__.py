"""The notification history in the Django admin: browse, filter, search, read.

Built to stay fast on a log of 100,000+ rows: every list query is either an index seek
or bounded by the page (see filters.py and paginator.py for the why); the
tests in tests/test_admin.py hold the number of queries per page fixed.
"""

import json

from django.contrib import admin
from django.utils.html import format_html

from notifications.admin.filters import (
    BoxListFilter,
    DateDrillDownQuerySet,
    IndexedValuesListFilter,
)
from notifications.admin.paginator import EstimatedCountPaginator
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
        # Stations and boxes listed from their own (small) tables; Django's
        # RelatedOnlyFieldListFilter would run a DISTINCT over the whole log instead.
        "station",
        ("box", BoxListFilter),
        ("fault_type", IndexedValuesListFilter),
        ("action", IndexedValuesListFilter),
        "received_at",
    ]
    # "=message_id": a pasted id; get_search_results answers an exact id from the
    # unique index. Anything else searches the message text (a scan, like any
    # substring search) and, case-insensitively, the id.
    search_fields = ["=message_id", "message"]
    date_hierarchy = "received_at"
    ordering = ["-received_at", "-id"]
    # Only orders an index can serve; sorting by station, type or text would sort the
    # whole (filtered) log on every page. Filter by those instead.
    sortable_by = ["received_at", "message_id"]
    list_select_related = ["station", "box", "connector__box"]
    list_per_page = 100
    paginator = EstimatedCountPaginator
    # No second count(*) of the unfiltered log next to the filtered one.
    show_full_result_count = False
    # Facet counts ("Show counts") are one COUNT per filter over the filtered log.
    show_facets = admin.ShowFacets.NEVER

    fieldsets = [
        (None, {"fields": ["message_id", "station", "box", "connector"]}),
        ("Event", {"fields": ["fault_type", "action", "message", "code", "extra"]}),
        ("Log", {"fields": ["occurred_at", "received_at", "seq"]}),
        ("Raw payload, as posted", {"fields": ["raw_payload"]}),
    ]
    readonly_fields = [
        "message_id",
        "station",
        "box",
        "connector",
        "fault_type",
        "action",
        "message",
        "code",
        "extra",
        "occurred_at",
        "received_at",
        "seq",
        "raw_payload",
    ]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        # Same rows and results; only the date hierarchy's two queries are cheaper.
        return DateDrillDownQuerySet(model=queryset.model, query=queryset.query, using=queryset.db)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if 0 < len(term) <= Notification._meta.get_field("message_id").max_length:
            # Ids are unique: a term that is one is that row, found through the unique
            # index. Without this, the id comparison is OR-ed with a substring match on
            # the message, which scans the whole log for every count and page.
            by_id = queryset.filter(message_id=term)
            if by_id.exists():
                return by_id, False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="message")
    def short_message(self, obj):
        return obj.message if len(obj.message) <= 80 else obj.message[:77] + "..."

    @admin.display(description="raw payload")
    def raw_payload(self, obj):
        return format_html(
            "<pre style='white-space: pre-wrap'>{}</pre>",
            json.dumps(obj.payload, indent=2, ensure_ascii=False),
        )

    # The log is written by the ingest only and is append-only: the admin reads it.
    # No deletion either, superusers included: streams resume by per-station sequence,
    # and only `manage.py prune_notifications` records how far a station's log was cut
    # (Station.log_pruned_through) so that clients holding an older cursor get a
    # stream-reset; a row deleted here would vanish from replays without one.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
