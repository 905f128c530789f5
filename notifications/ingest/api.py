"""POST /api/event: the DRF view. Thin on purpose: limits, then `ingest_posted`.

Under Daphne it runs behind the ingest door (door.py) on the ingest's threads; under
WSGI (Django's test client, a WSGI deployment) Django's handler runs it. Either way
authentication (API keys, sessions), permission, throttling, parsing and every error
answer are DRF's, in the one error shape (notifications/errors.py).
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from access.api_auth import API_AUTHENTICATION, IngestKeyThrottle, IsIngestKey
from access.policy import key_from_headers
from cgm import db_health
from notifications.errors import too_large
from notifications.ingest.group_commit import committer
from notifications.ingest.request import ingest_posted


def body_too_large():
    return too_large(f"The body is larger than {settings.CGM_INGEST_MAX_BODY_BYTES} bytes.")


class JSONOnly(DefaultContentNegotiation):
    """The answer is JSON whatever the Accept header says (DRF's documented
    "IgnoreClientContentNegotiation"): devices send odd Accept headers, and every
    answer here is JSON anyway."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class EventIngestView(APIView):
    content_negotiation_class = JSONOnly
    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsIngestKey]
    throttle_classes = [IngestKeyThrottle]

    def initial(self, request, *args, **kwargs):
        db_health.check()  # the database is known to be away: 503 now, not after a wait
        # Limits before work: a body over the limit is refused before authentication
        # reads it (a signed key's signature covers the body), except that a caller with
        # no credentials at all hears 401 first.
        if _declared_too_large(request) or getattr(request._request, "body_too_large", False):
            if not _presents_credentials(request):
                super().initial(request, *args, **kwargs)  # raises NotAuthenticated (401)
            raise body_too_large()
        super().initial(request, *args, **kwargs)

    def post(self, request):
        if not request.content_type:
            # DRF would read a body without a Content-Type as empty ("id required").
            raise exceptions.UnsupportedMediaType("", 'No Content-Type: send "application/json".')
        try:
            body = request.data
        except RequestDataTooBig:  # WSGI: the body turned out longer than declared
            raise body_too_large() from None
        code, data = ingest_posted(request.auth, body, committer.store)
        return Response(data, status=code)


def _presents_credentials(request) -> bool:
    return key_from_headers(request.headers) is not None or bool(request._request.COOKIES)


def _declared_too_large(request) -> bool:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > settings.CGM_INGEST_MAX_BODY_BYTES
    except ValueError:
        return False


# CSRF: DRF decides (its SessionAuthentication enforces it for session callers).
event_ingest = EventIngestView.as_view()
