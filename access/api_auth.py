"""DRF authentication, permissions and throttling for the HTTP API."""

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.throttling import BaseThrottle

from access.models import ApiKey
from access.policy import (
    NOTHING,
    READING_SCOPES,
    Principal,
    StationSet,
    find_key,
    key_from_headers,
    key_stations,
    note_key_used,
    user_stations,
)
from access.signing import SignatureError, verify_signature
from access.throttle import ingest_limiter
from notifications.errors import WWW_AUTHENTICATE


class KeyCaller:
    """request.user for a request made with an API key (request.auth is the key)."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key
        self.pk = None

    def __str__(self):
        return f"API key {self.api_key.name}"


class ApiKeyAuthentication(BaseAuthentication):
    """An API key in `Authorization: Bearer` or `X-Api-Key`; a key made with --signed
    also needs a valid signature of the body (access/signing.py)."""

    def authenticate(self, request):
        raw = key_from_headers(request.headers)
        if raw is None:
            return None
        api_key = find_key(raw)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if api_key.require_signature:
            try:
                verify_signature(api_key.key_hash, request.headers, request.body)
            except SignatureError as exc:
                raise exceptions.AuthenticationFailed(str(exc)) from None
        note_key_used(api_key)
        return KeyCaller(api_key), api_key

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return WWW_AUTHENTICATE


API_AUTHENTICATION = [ApiKeyAuthentication, SessionAuthentication]


def request_principal(request) -> Principal | None:
    if isinstance(request.auth, ApiKey):
        return Principal("key", request.auth.pk)
    if request.user is not None and request.user.is_authenticated:
        return Principal("user", request.user.pk)
    return None


def request_stations(request, scope: str) -> StationSet:
    if isinstance(request.auth, ApiKey):
        return key_stations(request.auth, scope)
    if request.user is not None and scope in (ApiKey.Scope.SUBSCRIBE, ApiKey.Scope.OPERATE):
        # A user who may watch a station may work its faults.
        return user_stations(request.user)
    return NOTHING


class IsIngestKey(BasePermission):
    message = "Posting events needs an API key with the ingest scope."

    def has_permission(self, request, view):
        return isinstance(request.auth, ApiKey) and request.auth.scope == ApiKey.Scope.INGEST


class IsSubscriber(BasePermission):
    """A logged-in user or a subscribe key; station checks happen in the view."""

    message = "Reading needs a login or an API key with the subscribe or operate scope."

    def has_permission(self, request, view):
        if isinstance(request.auth, ApiKey):
            return request.auth.scope in READING_SCOPES
        return bool(request.user and request.user.is_authenticated)


class IsOperator(BasePermission):
    """Acting on faults: a logged-in user (station checks in the view; DRF's session
    authentication enforces CSRF) or an operate key. A subscribe key reads only."""

    message = "Acting on faults needs a login or an API key with the operate scope."

    def has_permission(self, request, view):
        if isinstance(request.auth, ApiKey):
            return request.auth.scope == ApiKey.Scope.OPERATE
        return bool(request.user and request.user.is_authenticated)


class IngestKeyThrottle(BaseThrottle):
    """Requests per API key (access/throttle.py); answers 429 with Retry-After."""

    def allow_request(self, request, view):
        if not isinstance(request.auth, ApiKey):
            return True
        self._wait = ingest_limiter.wait_seconds(request.auth.key_hash)
        return self._wait == 0

    def wait(self):
        return self._wait
