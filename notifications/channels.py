"""Which channels a stream request names, and who may read them."""

from django_eventstream.channelmanager import DefaultChannelManager


class StationChannelManager(DefaultChannelManager):
    def get_channels_for_request(self, request, view_kwargs):
        if "station" in view_kwargs:
            return {view_kwargs["station"]}
        return set(request.GET.getlist("station"))

    def can_read_channel(self, user, channel):
        return True

    def is_channel_reliable(self, channel):
        # Every station channel is backed by the notification log.
        return True
