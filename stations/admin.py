from django.contrib import admin

from stations.models import Box, Connector, Station


class BoxInline(admin.TabularInline):
    model = Box
    extra = 0
    show_change_link = True


class ConnectorInline(admin.TabularInline):
    model = Connector
    extra = 0


@admin.register(Station)
class StationAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "log_seq", "created_at"]
    search_fields = ["code", "name"]
    readonly_fields = ["log_seq", "log_pruned_through", "created_at"]
    inlines = [BoxInline]


@admin.register(Box)
class BoxAdmin(admin.ModelAdmin):
    list_display = ["code", "station", "name"]
    list_filter = ["station"]
    list_select_related = ["station"]
    search_fields = ["code", "name", "station__code"]
    raw_id_fields = ["station"]
    inlines = [ConnectorInline]


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ["code", "box", "station_code"]
    list_select_related = ["box__station"]
    search_fields = ["code", "box__code", "box__station__code"]
    raw_id_fields = ["box"]

    @admin.display(description="station", ordering="box__station__code")
    def station_code(self, obj):
        return obj.box.station.code
