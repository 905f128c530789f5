"""Which stations a stream names, and who may read them: django-eventstream's
ChannelManager extension point (settings.EVENTSTREAM_CHANNELMANAGER_CLASS).

The stream view (view.py) asks `forbidden_stations`, and so does `can_read_channel`, so
django-eventstream's own views and helpers (should anyone mount
`django_eventstream.urls` or call `channel_permission_changed`) enforce exactly the
stream view's per-station policy (access/policy.py), never "everyone may read".
"""

from django_eventstream.channelmanager import DefaultChannelManager

from access.models import ApiKey
from access.policy import Principal, readable_stations


def forbidden_stations(principal: Principal | None, codes: list[str]) -> list[str]:
    """The codes this caller may not read (fresh from the database)."""
    if principal is None:
        return list(codes)
    return readable_stations(principal).forbidden(codes)


def _principal(user) -> Principal | None:
    """django-eventstream passes request.user (None when anonymous); the project's own
    callers pass a Principal or an ApiKey."""
    if isinstance(user, Principal):
        return user
    if isinstance(user, ApiKey):
        return Principal("key", user.pk)
    if user is not None and getattr(user, "is_authenticated", False) and user.pk is not None:
        return Principal("user", user.pk)
    return None


class StationChannelManager(DefaultChannelManager):
    def get_channels_for_request(self, request, view_kwargs):
        if "station" in view_kwargs:
            return {view_kwargs["station"]}
        return set(request.GET.getlist("station"))

    def can_read_channel(self, user, channel):
        return not forbidden_stations(_principal(user), [channel])

    def is_channel_reliable(self, channel):
        # Every station channel is backed by the notification log.
        return True
