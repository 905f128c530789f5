"""Equipment in the Django admin: stations, their boxes (charge points) and connectors.

Devices name equipment by code and unknown codes are refused, so this is where new
equipment is registered. Equipment that has notifications cannot be deleted (the log
protects it); prune its history with `manage.py prune_notifications` first.
"""

from django.contrib import admin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from notifications.models import Notification
from stations.models import Box, Connector, Station


def history_link(**filters):
    """A link to the notification history filtered to one station or box (no query)."""
    url = reverse("admin:notifications_notification_changelist")
    return format_html('<a href="{}?{}">notifications</a>', url, urlencode(filters))


class HistoryProtectsDeletion:
    """Equipment that notifications refer to cannot be deleted (on_delete=PROTECT).

    Django's delete confirmation would find that out by loading every protecting
    notification and listing each one as a link: 33,000 rows and 8 s for one station of
    a 100,000-row log. This counts them instead (one query) and says what to do.
    """

    # How Notification rows refer to the objects of this admin (a Q per queryset).
    def history_of(self, objs) -> Q:
        raise NotImplementedError

    def get_deleted_objects(self, objs, request):
        referring = Notification.objects.filter(self.history_of(objs)).count()
        if referring:
            protected = [
                f"{referring} notifications (prune them first: manage.py prune_notifications)"
            ]
            return [], {}, set(), protected
        return super().get_deleted_objects(objs, request)


class BoxInline(admin.TabularInline):
    model = Box
    fields = ["code", "name"]
    extra = 0
    show_change_link = True
    # Deleting through an inline bypasses get_deleted_objects (Django checks each row
    # by loading its protecting notifications): delete a box from its own page.
    can_delete = False


class ConnectorInline(admin.TabularInline):
    model = Connector
    fields = ["code"]
    extra = 0
    can_delete = False  # as BoxInline: from the connector's own page

    def get_queryset(self, request):
        # Each row's title is str(connector), which reads connector.box.
        return super().get_queryset(request).select_related("box")


@admin.register(Station)
class StationAdmin(HistoryProtectsDeletion, admin.ModelAdmin):
    list_display = ["code", "name", "box_count", "log_seq", "created_at", "history"]
    search_fields = ["code", "name"]
    readonly_fields = ["log_seq", "log_pruned_through", "created_at"]
    inlines = [BoxInline]

    def get_queryset(self, request):
        # One GROUP BY for the box counts of the whole page, not a COUNT per row.
        return super().get_queryset(request).annotate(box_count=Count("boxes"))

    def get_readonly_fields(self, request, obj=None):
        # A station's code is in stream URLs, channel names and clients' cursors
        # ("ST001:42"); renaming it would orphan all of them. Set it once, at creation.
        readonly = list(super().get_readonly_fields(request, obj))
        return ["code", *readonly] if obj is not None else readonly

    def history_of(self, objs):
        return Q(station__in=objs)  # boxes and connectors go too (CASCADE): same station

    @admin.display(description="boxes", ordering="box_count")
    def box_count(self, obj):
        return obj.box_count

    @admin.display(description="history")
    def history(self, obj):
        return history_link(station__id__exact=obj.pk)


@admin.register(Box)
class BoxAdmin(HistoryProtectsDeletion, admin.ModelAdmin):
    list_display = ["code", "station", "name", "connector_count", "history"]
    list_filter = ["station"]
    list_select_related = ["station"]
    search_fields = ["code", "name", "station__code"]
    autocomplete_fields = ["station"]
    inlines = [ConnectorInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(connector_count=Count("connectors"))

    def history_of(self, objs):
        return Q(box__in=objs) | Q(connector__box__in=objs)  # its connectors go too

    @admin.display(description="connectors", ordering="connector_count")
    def connector_count(self, obj):
        return obj.connector_count

    @admin.display(description="history")
    def history(self, obj):
        return history_link(station__id__exact=obj.station_id, box__id__exact=obj.pk)


@admin.register(Connector)
class ConnectorAdmin(HistoryProtectsDeletion, admin.ModelAdmin):
    list_display = ["code", "box", "station_code"]
    list_filter = ["box__station"]
    list_select_related = ["box__station"]
    search_fields = ["code", "box__code", "box__station__code"]
    autocomplete_fields = ["box"]

    def history_of(self, objs):
        return Q(connector__in=objs)

    @admin.display(description="station", ordering="box__station__code")
    def station_code(self, obj):
        return obj.box.station.code
