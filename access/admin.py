"""API keys and station assignments in the admin; assignments also on users and groups."""

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.utils import timezone

from access.models import KEY_PREFIX, ApiKey, StationAccess


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "scope",
        "key_prefix",
        "station_scope",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    filter_horizontal = ["stations"]
    readonly_fields = ["key_prefix", "created_at", "last_used_at", "revoked_at"]
    fields = [
        "name",
        "scope",
        "key_prefix",
        "all_stations",
        "stations",
        "require_signature",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke_keys"]

    @admin.display(description="key")
    def key_prefix(self, obj):
        return f"{KEY_PREFIX}_{obj.prefix}_…" if obj.prefix else "-"

    @admin.display(description="stations")
    def station_scope(self, obj):
        return "all" if obj.all_stations else ", ".join(s.code for s in obj.stations.all())

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("stations")

    def has_add_permission(self, request):
        # The key must be shown once to its creator: manage.py createapikey does that.
        return False

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        count = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
            count += 1
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)


@admin.register(StationAccess)
class StationAccessAdmin(admin.ModelAdmin):
    list_display = ["station", "user", "group"]
    list_filter = ["station"]
    list_select_related = ["station", "user", "group"]
    search_fields = ["station__code", "user__username", "group__name"]
    autocomplete_fields = ["station", "user", "group"]


class UserStationInline(admin.TabularInline):
    model = StationAccess
    fk_name = "user"
    fields = ["station"]
    autocomplete_fields = ["station"]
    extra = 0
    verbose_name_plural = "stations this user may watch"


class GroupStationInline(UserStationInline):
    fk_name = "group"
    verbose_name_plural = "stations this group's members may watch"


User = get_user_model()
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class StationUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserStationInline]


@admin.register(Group)
class StationGroupAdmin(GroupAdmin):
    inlines = [*GroupAdmin.inlines, GroupStationInline]
