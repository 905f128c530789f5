"""Faults in the admin: browse them, acknowledge or resolve in bulk, edit the rules.

Faults are read-only here except through the actions, which go through the same
service as the API (faults/actions.py): recorded, logged and pushed to the stations'
streams like any operator's action.
"""

from django.contrib import admin, messages

from faults.actions import Actor, FaultResolvedError, act_on_fault
from faults.models import EventRule, Fault, FaultAction, SeverityRule


class FaultActionInline(admin.TabularInline):
    model = FaultAction
    extra = 0
    can_delete = False
    fields = ["at", "action", "actor", "remote_addr", "note"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


def _bulk(action: str, label: str):
    def run(modeladmin, request, queryset):
        actor = Actor(
            name=request.user.get_username(),
            remote_addr=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.headers.get("User-Agent", ""),
        )
        done = skipped = 0
        for fault_id in queryset.values_list("pk", flat=True):
            try:
                act_on_fault(fault_id, action, actor)
                done += 1
            except FaultResolvedError:
                skipped += 1
        modeladmin.message_user(request, f"{label}: {done} fault(s).", messages.SUCCESS)
        if skipped:
            modeladmin.message_user(
                request, f"{skipped} already resolved fault(s) left as they were.", messages.WARNING
            )

    run.__name__ = f"{action}_selected"
    return admin.action(description=f"{label} selected faults", permissions=["change"])(run)


@admin.register(Fault)
class FaultAdmin(admin.ModelAdmin):
    list_display = [
        "id", "station", "box", "connector", "fault_type", "code", "severity", "state",
        "occurrences", "last_seen", "acknowledged_by",
    ]  # fmt: skip
    list_filter = ["state", "severity", "station"]
    search_fields = ["fault_type", "code", "station__code", "box__code", "note"]
    list_select_related = ["station", "box", "connector"]
    date_hierarchy = "last_seen"
    inlines = [FaultActionInline]
    actions = [
        _bulk(FaultAction.Action.ACKNOWLEDGED, "Acknowledge"),
        _bulk(FaultAction.Action.RESOLVED, "Resolve"),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Fault._meta.fields]

    def has_add_permission(self, request):
        return False  # faults come from events

    def has_delete_permission(self, request, obj=None):
        return False  # history: resolve instead


@admin.register(EventRule)
class EventRuleAdmin(admin.ModelAdmin):
    list_display = [
        "position", "enabled", "effect", "fault_type", "code", "action", "status", "cleared",
        "description",
    ]  # fmt: skip
    list_display_links = ["effect"]
    list_editable = ["position", "enabled"]
    list_filter = ["enabled", "effect"]


@admin.register(SeverityRule)
class SeverityRuleAdmin(admin.ModelAdmin):
    list_display = ["fault_type", "code", "severity"]
    list_editable = ["severity"]
    list_filter = ["severity"]
    search_fields = ["fault_type", "code"]
