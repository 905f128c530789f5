"""Every text the console's JavaScript shows, in one place and ready for translation.

The dashboard template renders this dict with `json_script` into the page; the scripts
read it through `CGM.t(key, params)` (static/console/strings.js). Placeholders are
Python's named `%(name)s` form, so translators see the same syntax as in the template and
`makemessages` finds each text here. Texts in the HTML itself use `{% translate %}`.
A text with a count has a `_one` and an `_other` form (ngettext-style, two forms; a
language that needs more adds keys and strings.js's `plural`).
"""

from django.utils.translation import gettext_lazy as _

CONSOLE_STRINGS = {
    # The document title and the connection pill.
    "title": _("Depot console · CGM"),
    "title_unacknowledged": _("(%(count)s) %(title)s"),
    "title_stale": _("⚠ Stale · %(title)s"),
    "title_signed_out": _("Signed out · %(title)s"),
    "status_idle": _("no station selected"),
    "status_connecting": _("connecting…"),
    "status_live": _("live"),
    "status_reconnecting": _("reconnecting…"),
    "status_offline_retry": _("offline · retrying in %(seconds)s s"),
    "status_offline": _("offline"),
    "status_signed_out": _("signed out"),
    "status_too_many": _("too many stations"),
    "cursor_tooltip": _("Stream cursor %(cursor)s: where the feed resumes after a disconnect"),
    # Loud problems.
    "stale_banner": _("Connection lost: data may be stale since %(time)s. Reconnecting…"),
    "signed_out": _("You are signed out (in this tab or another one): the live feed has stopped."),
    "sign_in_again": _("Sign in again"),
    "stream_ended": _(
        "The server ended the stream (%(condition)s) for %(stations)s. "
        "Change the selection or reload the page."
    ),
    # Why the server ended a stream (stream-error's condition).
    "condition_forbidden": _("access withdrawn"),
    "load_failed": _("Could not load the stations' state: %(message)s"),
    "http_status": _("the server answered %(status)s"),
    "too_many_stations": _("Select at most %(max)s stations."),
    "stream_reset": _(
        "The stream was reset for %(stations)s; their state and history were reloaded, "
        "and events in between may be missing from the log."
    ),
    # Why a stream-reset happened, per station.
    "reset_pruned": _("older history pruned"),
    "reset_unknown_cursor": _("the server's log is behind this page"),
    "badge_poll_failed": _("Could not refresh the station badges: %(message)s"),
    # Relative ages.
    "ago_now": _("just now"),
    "ago_seconds": _("%(count)s s ago"),
    "ago_minutes": _("%(count)s min ago"),
    "ago_hours": _("%(count)s h ago"),
    "ago_days": _("%(count)s d ago"),
    # The board.
    "connector": _("Connector %(id)s"),
    "status_unknown": _("No report yet"),
    "box_last_seen": _("last heard %(age)s"),
    "box_never_seen": _("never heard from"),
    "since": _("since %(age)s"),
    # OCPP statuses, as shown on the board.
    "status_Available": _("Available"),
    "status_Preparing": _("Preparing"),
    "status_Charging": _("Charging"),
    "status_SuspendedEVSE": _("Suspended (EVSE)"),
    "status_SuspendedEV": _("Suspended (EV)"),
    "status_Finishing": _("Finishing"),
    "status_Reserved": _("Reserved"),
    "status_Unavailable": _("Unavailable"),
    "status_Faulted": _("Faulted"),
    "status_Occupied": _("Occupied"),
    "status_Offline": _("Offline"),
    # Faults.
    "severity_critical": _("Critical"),
    "severity_error": _("Error"),
    "severity_warning": _("Warning"),
    "severity_info": _("Info"),
    "faults_none": _("Nothing is broken at the selected stations."),
    "faults_hidden": _("%(count)s more hidden by the severity filter."),
    "faults_count_one": _("%(count)s unresolved, %(unack)s not acknowledged"),
    "faults_count_other": _("%(count)s unresolved, %(unack)s not acknowledged"),
    "occurrences_one": _("once"),
    "occurrences_other": _("×%(count)s"),
    "first_seen": _("first %(age)s"),
    "last_seen": _("last %(age)s"),
    "not_acknowledged": _("Not acknowledged"),
    "acknowledged_by": _("Acknowledged by %(who)s %(age)s"),
    "note": _("Note: %(note)s"),
    "note_placeholder": _("Note (optional)"),
    "note_label": _("Note for fault %(id)s"),
    "action_acknowledge": _("Acknowledge"),
    "action_unacknowledge": _("Unacknowledge"),
    "action_resolve": _("Resolve"),
    "action_note": _("Save note"),
    "action_failed": _("%(action)s failed: %(message)s"),
    "action_failed_network": _("the server did not answer; check the connection and try again"),
    "action_conflict": _("the fault is already resolved"),
    "action_gone": _("the fault is not visible to you any more"),
    "action_forbidden": _("you may not act on this station's faults"),
    "action_signed_out": _("you are signed out"),
    "where_box": _("%(station)s · %(box)s"),
    "where_connector": _("%(station)s · %(box)s · connector %(connector)s"),
    # The log.
    "feed_empty_none": _("Pick one or more stations to see their notifications."),
    "feed_empty": _("No notifications yet for the selected stations."),
    "feed_count_one": _("%(count)s notification"),
    "feed_count_other": _("%(count)s notifications"),
    "feed_dropped": _("(older ones dropped)"),
    "feed_hidden": _("%(count)s hidden by the filters"),
    "received_title": _("received %(time)s"),
    "device_title": _("device time %(time)s"),
    "kind_cleared": _("cleared"),
    # The picker.
    "selected_count": _("%(selected)s of %(total)s"),
    "badge_title": _("%(critical)s critical, %(error)s error faults unresolved"),
    # Alerts.
    "desktop_title": _("Critical fault at %(station)s"),
    "desktop_body": _("%(faultType)s at %(where)s"),
    "desktop_denied": _(
        "The browser blocks notifications for this page; allow them in its site settings."
    ),
    "desktop_unsupported": _("This browser cannot show desktop notifications."),
    "sound_unsupported": _("This browser cannot play the alert sound."),
}


def console_strings() -> dict[str, str]:
    """The strings in the request's active language (lazy texts resolved here)."""
    return {key: str(text) for key, text in CONSOLE_STRINGS.items()}
