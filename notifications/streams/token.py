"""POST /api/stream-token: a `?token=` for `EventSource(url + "&token=...")`, which
cannot send an Authorization header (access/tokens.py says how long it lasts and what
ends it). Session callers need the CSRF token (a write)."""

from django.conf import settings
from rest_framework.response import Response
from rest_framework.views import APIView

from access.api_auth import API_AUTHENTICATION, IsSubscriber, request_principal
from access.models import ApiKey
from access.tokens import issue_stream_token


class StreamTokenView(APIView):
    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsSubscriber]

    def post(self, request):
        from_session = not isinstance(request.auth, ApiKey)
        session_key = request._request.session.session_key if from_session else ""
        token = issue_stream_token(request_principal(request), session_key or "")
        return Response({"token": token, "expiresIn": settings.CGM_STREAM_TOKEN_SECONDS})
